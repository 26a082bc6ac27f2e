"""Failed logins per source address: past ``LIMIT`` failures within ``WINDOW``, an address is refused (429)
until the oldest of them leaves the window — whichever accounts it tried (password spraying), on top of the
per-account lockout (exchange.auth.accounts). Kept in the API process's memory: each API process counts its
own, and a restart forgets (the account lockout, in the store, does not)."""
from __future__ import annotations

import threading
import time
from collections import deque

LIMIT = 20
WINDOW = 300.0  # seconds


class FailureThrottle:
    def __init__(self, limit: int = LIMIT, window: float = WINDOW) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.setdefault(address, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(address, now)
            if len(times) < self.limit:
                if not times:
                    self._failures.pop(address, None)  # forget quiet addresses: the table stays small
                return None
            return times[0] + self.window - now

    def failed(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(address, now).append(now)
