"""Fixtures for the HL7 v2 adapter's tests: the result pipeline, a receiver with its ACK journal and an MLLP
server in a thread. The broker, database, engine, code book and pseudonymizer come from the plugin in tests/fixtures/."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.hl7 import AckJournal, Hl7Receiver, mllp
from adapters.pipeline import ResultPipeline
from tests.fakes import FakePublisher


@pytest.fixture
def pipeline(book, pseudonymizer) -> ResultPipeline:  # type: ignore[no-untyped-def]
    return ResultPipeline(book, pseudonymizer)


@pytest.fixture
def receiver(book, pseudonymizer, tmp_path) -> Iterator[Hl7Receiver]:  # type: ignore[no-untyped-def]
    journal = AckJournal(tmp_path / "hl7-acks.db")
    yield Hl7Receiver("bj-chaoyang-001", book, pseudonymizer, FakePublisher(), journal, max_bytes=64 * 1024)
    journal.close()


@pytest.fixture
def server(receiver) -> Iterator[mllp.MLLPServer]:  # type: ignore[no-untyped-def]
    with mllp.MLLPServer(("127.0.0.1", 0), receiver, max_bytes=receiver.max_bytes, max_connections=2) as srv:
        yield srv
