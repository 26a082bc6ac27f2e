"""The engine's wait before resuming after an outage: doubling within one outage, reset by a recovery."""
from __future__ import annotations

import threading

from sqlalchemy.exc import OperationalError

from exchange.engine import ResultEngine


class _RecordingStop(threading.Event):
    """A stop event that records each wait instead of sleeping, and sets itself after ``limit`` waits."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.limit = limit

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        if len(self.waits) >= self.limit:
            self.set()
        return self.is_set()


def _engine_failing(outcomes: list[bool]) -> ResultEngine:
    """An engine whose consumer fails once per call; ``True`` = it committed a batch before failing."""
    engine = ResultEngine("127.0.0.1:9", database=None, group="g", publisher=None)  # type: ignore[arg-type]
    calls = iter(outcomes)

    def consume(stop: threading.Event) -> None:
        engine._committed = next(calls)  # noqa: SLF001 - what _consume records after a commit
        raise OperationalError("SELECT 1", {}, Exception("the connection is closed"))

    engine._consume = consume  # type: ignore[method-assign]
    return engine


def test_the_wait_doubles_while_an_outage_lasts() -> None:
    stop = _RecordingStop(limit=6)
    _engine_failing([False] * 6).run(stop)
    assert stop.waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_a_new_outage_after_a_recovery_waits_half_a_second_again() -> None:
    # Three PostgreSQL restarts seconds apart, each recovered from (a batch committed in between): before the
    # fix the engine waited 0.5, 1 and 2 s, and 10 s after any fifth outage however long ago the fourth was.
    stop = _RecordingStop(limit=5)
    _engine_failing([False, True, True, False, True]).run(stop)
    assert stop.waits == [0.5, 0.5, 0.5, 1.0, 0.5]
