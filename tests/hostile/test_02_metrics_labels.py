"""Finding 2: made-up methods and paths cannot grow /metrics (methods outside the known set are
`other`; routes are matched templates or `unmatched`)."""
from __future__ import annotations

import random
import string

from tests.hostile.conftest import TENANT_A, bearer


def made_up(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def test_made_up_methods_and_paths_do_not_grow_metrics(keyed_api):
    client, *_ = keyed_api()
    rng = random.Random(0)

    def hammer(times: int) -> None:
        for _ in range(times):
            client.request(made_up(rng, 40), f"/{made_up(rng, 12)}")
            client.request(made_up(rng, 40), "/v1/jobs", headers=bearer(TENANT_A))
            client.get(f"/v1/jobs/{made_up(rng, 32)}", headers=bearer(TENANT_A))

    hammer(1)   # the label sets a stranger can reach exist now (and /metrics' own)
    client.get("/metrics")
    before = len(client.get("/metrics").content)
    hammer(100)
    after = client.get("/metrics")
    # Bound: 300 requests with made-up methods and paths add no series (only digits of the counts change).
    assert len(after.content) - before < 500
    assert 'method="other"' in after.text and 'route="/v1/jobs/{job_id}"' in after.text
