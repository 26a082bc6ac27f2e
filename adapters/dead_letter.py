"""The dead-letter step: publishing what could not be used to ``hr.deadletter.v1``.

Every door and the engine send their dead letters through :func:`publish_dead_letters`; the record itself
(scrubbed of resident IDs, validated against ``dead-letter.v1``) is built by
:func:`schemas.dead_letter.dead_letter_event`.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from adapters import metrics
from adapters.publish import Publisher, Record
from schemas import events
from schemas.topics import TOPIC_DEADLETTER


def dead_letter_key(letter: dict[str, Any]) -> str:
    """Partition key of a dead letter: where it came from, so one source's letters stay in order."""
    origin = letter["origin"]
    if origin.get("topic"):
        return f"{origin['topic']}:{origin.get('partition')}"
    return f"{origin.get('adapter') or origin['kind']}:{origin.get('institution') or '-'}"


def publish_dead_letters(publisher: Publisher, letters: Iterable[dict[str, Any]]) -> None:
    """Publish dead-letter events and return once the broker acknowledged all of them.

    Raises :class:`adapters.publish.BrokerUnavailable` when any was not acknowledged; the caller keeps them
    and tries again.
    """
    letters = list(letters)
    publisher.publish(Record(TOPIC_DEADLETTER, dead_letter_key(letter), events.encode(letter)) for letter in letters)
    for letter in letters:  # counted once the broker acknowledged them
        metrics.DEAD_LETTERS.labels(letter["origin"].get("adapter") or "engine").inc()
