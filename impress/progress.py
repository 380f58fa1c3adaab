"""Progress and cancel, as every long loop of the engine takes them: a `Reporter`.

A loop calls `reporter.advance(step, total)` as it goes. The reporter records progress where it
belongs (the job's record in a worker, a tqdm bar in the CLI, nowhere in a test) and raises
`Canceled` when the job was cancelled, so the loop stops at that call and the runner records the job
`canceled`. A loop made of parts (batches, matrix cells, training sets) gives each part a `Span` of
the whole count, so the caller sees one count from 0 to its total.

Pure Python on purpose: the ground floor (no torch, no Redis), usable from the CLI, tests and workers.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Protocol, runtime_checkable


class Canceled(Exception):
    """The job was cancelled while it ran: raised by `Reporter.advance`, turned into the job's
    `canceled` state by the worker's runner (never a failure)."""


@runtime_checkable
class Reporter(Protocol):
    """What a long loop reports to: `advance` after each step (cheap to call every step)."""

    def advance(self, step: int, total: int, loss: Optional[float] = None) -> None:
        """`step` of `total` done (`loss`, where the loop has one, for a bar's display); raises
        Canceled when the work must stop."""


class Silent:
    """A reporter for callers that need none: records nothing, never cancels."""

    def advance(self, step: int, total: int, loss: Optional[float] = None) -> None:
        return None


SILENT = Silent()

# Told (step, total); True when the work must stop (e.g. JobStore's progress write, which also reads
# the job's cancel flag in the same step).
ProgressSink = Callable[[int, int], bool]


class Throttled:
    """Passes progress to `sink` at most once per `every_s` seconds, and always at the last step, so a
    loop may call `advance` every step while the store sees a few writes a second. Raises Canceled when
    the sink says stop; a cancel is therefore noticed within `every_s` plus one step."""

    def __init__(self, sink: ProgressSink, every_s: float = 0.5, clock: Callable[[], float] = time.monotonic):
        self.sink = sink
        self.every_s = every_s
        self.clock = clock
        self._last: Optional[float] = None

    def advance(self, step: int, total: int, loss: Optional[float] = None) -> None:
        now = self.clock()
        if step < total and self._last is not None and now - self._last < self.every_s:
            return
        self._last = now
        if self.sink(step, total):
            raise Canceled


class Span:
    """One part of a larger count: steps `0..n` of this part are reported as `start..start + length`
    of `total` to `reporter` (a purify batch within all images' iterations, a matrix cell within the
    matrix, one training set within all sets)."""

    def __init__(self, reporter: Reporter, start: int, length: int, total: int):
        self.reporter = reporter
        self.start = start
        self.length = length
        self.total = total

    def advance(self, step: int, total: int, loss: Optional[float] = None) -> None:
        done = self.start + (self.length * step // total if total else self.length)
        self.reporter.advance(done, self.total, loss)


def spans(reporter: Reporter, lengths: list[int]) -> list[Span]:
    """Consecutive parts of `reporter`'s count, one per length, together counting sum(lengths)."""
    total, start, parts = sum(lengths), 0, []
    for length in lengths:
        parts.append(Span(reporter, start, length, total))
        start += length
    return parts
