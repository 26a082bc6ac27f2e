"""Stand-ins for the exchange's outside world in tests that need no real broker."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from adapters.publish import BrokerUnavailable, Record


class FakePublisher:
    """Takes the place of :class:`adapters.publish.Publisher`: a broker that acknowledges every record, which
    it keeps in ``records`` in the order published."""

    bootstrap = None  # no broker to probe

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.down = False  # True: refuse every publish as a broker that is away does

    def publish(self, records: Iterable[Record]) -> None:
        batch = list(records)
        if self.down:
            raise BrokerUnavailable("test: broker down")
        self.records.extend(batch)

    def close(self) -> None:
        pass

    def events(self, topic: str) -> list[dict[str, Any]]:
        """The decoded values published to ``topic``."""
        return [orjson.loads(r.value) for r in self.records if r.topic == topic]
