"""One module per job kind: the handler its JobSpec names (impress/kinds.py), a function of a typed
`worker.runner.JobContext` to a JobResult. Handlers pass `ctx.reporter` to every engine loop; they
never catch `Canceled` (the runner records it) and never write the job's state."""
from __future__ import annotations
