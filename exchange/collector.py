"""CPython's cyclic garbage collector, tuned for the exchange's long-running loops (the API, the engine).

Both build tens of thousands of short-lived containers per unit of work (a check over a long history, a
batch of a thousand events), nearly all freed by reference counting. At the default threshold (700
allocations) the collector runs dozens of times per unit for nothing, and each full collection walks every
long-lived object of the process (code book, SQLAlchemy, kafka-python): a measurable share of a check and
of the engine's ingest (bench/README.md). So, while such a loop runs:
what exists at start-up is frozen (moved out of the collector's view) and the young generation is larger;
cycle collection still runs, only less often.
"""
from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLDS = (20_000, 20, 20)

_lock = threading.Lock()
_users = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def tuned() -> Iterator[None]:
    """Freeze what exists now and raise the thresholds until the last concurrent user leaves (then restore)."""
    global _users, _saved
    with _lock:
        gc.collect()
        gc.freeze()
        if _users == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(*THRESHOLDS)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _saved is not None:
                gc.set_threshold(*_saved)
