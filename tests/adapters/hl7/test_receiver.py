"""The receiver: duplicates, refusals that are never journaled, incoming ACKs, and delivery end to end through
the real tansu broker and the engine writing to SQLite and PostgreSQL."""
from __future__ import annotations

import threading
import time

from sqlalchemy import text

from adapters.hl7 import AckJournal, Hl7Receiver, mllp
from adapters.publish import Publisher
from exchange.broker import EmbeddedBroker, ensure_topics
from schemas.topics import DEFAULT_PARTITIONS
from tests.fakes import FakePublisher
from tests.adapters.hl7.hl7data import (CHAOYANG, CHAOYANG_ID, CORRECTION, WUHAN_GBK, WUHAN_ID, XUHUI,
                                        CountingPublisher, fields, renumber, replace,
                                        start_engine)
from tests.fixtures.waiting import wait_for


def test_receiver_original_mode_and_duplicates(receiver) -> None:  # type: ignore[no-untyped-def]
    first = receiver.handle(CHAOYANG)
    assert first.code == "AA" and first.published == 1 and len(receiver.publisher.records) == 1
    resent = replace(CHAOYANG, "20240315093012+0800", "20240315093512+0800")  # resent: new MSH-7
    again = receiver.handle(resent)
    assert again.duplicate and again.ack == first.ack and again.published == 1
    assert len(receiver.publisher.records) == 2  # published again before the stored ACK is replayed
    reused = receiver.handle(replace(CHAOYANG, "|56|U/L|", "|57|U/L|"))  # same control ID, other content
    ack = fields(reused.ack)
    assert (ack["MSA-1"], ack["ERR-2"], ack["ERR-3"]) == ("AE", "MSH^1^10", "205^Duplicate key identifier^HL70357")
    assert "used before by this sender" in ack["ERR-8"] and not reused.duplicate
    assert len(receiver.publisher.records) == 2  # nothing published
    receiver.publisher.down = True
    down = receiver.handle(renumber(CHAOYANG, 1))
    assert down.code == "AE" and fields(down.ack)["ERR-3"].startswith("207^")
    lost = receiver.handle(resent)  # a resend while the broker is away is refused, never answered AA
    assert (lost.code, lost.duplicate) == ("AE", False) and "resend later" in fields(lost.ack)["ERR-8"]
    assert receiver.journal.count() == 1  # refusals are never journaled, so the resend is processed
    receiver.publisher.down = False
    assert receiver.handle(renumber(CHAOYANG, 1)).code == "AA"
    assert receiver.handle(resent).ack == first.ack
    assert receiver.journal.report_count() == 2  # one digest per report key, however often it was delivered


def test_concurrent_conflicting_reports_one_is_refused(book, pseudonymizer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two messages (other control IDs) carrying one report key with different content, in flight together
    while Kafka is slow: the second waits for the first's key, then meets its digest."""

    class SlowPublisher(FakePublisher):
        def publish(self, records) -> None:  # type: ignore[no-untyped-def]
            time.sleep(0.3)
            super().publish(records)

    journal = AckJournal(tmp_path / "acks.db")
    receiver = Hl7Receiver("bj-chaoyang-001", book, pseudonymizer, SlowPublisher(), journal)
    messages = [replace(CHAOYANG, "CY20240315000123", "CY-A"),
                replace(replace(CHAOYANG, "CY20240315000123", "CY-B"), "|56|U/L|", "|57|U/L|")]
    codes: list[str] = []
    workers = [threading.Thread(target=lambda raw=raw: codes.append(receiver.handle(raw).code)) for raw in messages]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert sorted(codes) == ["AA", "AE"] and len(receiver.publisher.records) == 1
    finally:
        journal.close()


def test_enhanced_mode_duplicates_and_conflicts(receiver) -> None:  # type: ignore[no-untyped-def]
    enhanced = replace(CHAOYANG, "|P|2.5.1||||||", "|P|2.5.1|||AL|NE|||")
    first = receiver.handle(enhanced)
    assert first.code == "CA"
    receiver.publisher.down = True
    assert receiver.handle(enhanced).code == "CE"  # a duplicate that cannot be published again
    receiver.publisher.down = False
    assert receiver.handle(enhanced).ack == first.ack
    conflict = receiver.handle(replace(enhanced, "|56|U/L|", "|57|U/L|"))
    assert conflict.code == "CE" and fields(conflict.ack)["ERR-3"].startswith("205^")


def test_an_incoming_ack_is_not_acknowledged(receiver) -> None:  # type: ignore[no-untyped-def]
    ack = b"MSH|^~\\&|A|B|HRX|HRX|20240101||ACK^R01^ACK|X1|P|2.5.1\rMSA|AA|Q1"
    assert receiver.handle(ack).ack is None


def _count(database, where: str = "1=1", **params) -> int:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM results WHERE {where}"), params).scalar_one())


def _listener(book, pseudonymizer, publisher, journal, institution):  # type: ignore[no-untyped-def]
    return mllp.MLLPServer(("127.0.0.1", 0), Hl7Receiver(institution, book, pseudonymizer, publisher, journal))


def test_end_to_end_corrections_duplicates_and_stale_resends(broker, database, engine_thread, book, pseudonymizer,
                                                             tmp_path) -> None:  # type: ignore[no-untyped-def]
    publisher = CountingPublisher(broker.bootstrap, timeout_s=10)
    journal = AckJournal(tmp_path / "hl7-acks.db")
    servers = {i: _listener(book, pseudonymizer, publisher, journal, i).start()
               for i in ("bj-chaoyang-001", "hb-wuhan-001", "sh-xuhui-001")}
    try:
        with mllp.MLLPClient(*servers["bj-chaoyang-001"].address) as cy:
            first = cy.send(CHAOYANG)
            assert fields(first)["MSA-1"] == "AA"
            assert cy.send(CHAOYANG) == first  # duplicate: the stored ACK, byte for byte
            assert publisher.published == 2  # ... after publishing it again
            assert fields(cy.send(CORRECTION))["MSA-1"] == "AA"
            stale = replace(CHAOYANG, "CY20240315000123", "CY20240315000999")  # the final again, new control ID
            assert fields(cy.send(stale))["MSA-1"] == "AA"
        with mllp.MLLPClient(*servers["hb-wuhan-001"].address) as wh:
            ack = wh.send(WUHAN_GBK)
            assert fields(ack, "gb18030")["MSA-1"] == "AA" and ack.decode("gb18030")  # answered in its charset
        with mllp.MLLPClient(*servers["sh-xuhui-001"].address) as xh:
            assert fields(xh.send(XUHUI))["MSA-1"] == "AA"
        assert publisher.published == 7  # the duplicate and the stale final are published; the store absorbs them
        wait_for(lambda: _count(database) == 5)
        assert _count(database, "issuer = 'bj-chaoyang-001' AND result_id = 'CY2403150088'") == 2
        with database.connect() as conn:
            head = conn.execute(text("SELECT version FROM result_heads WHERE result_id = 'CY2403150088'")).scalar_one()
            glu = conn.execute(text(
                "SELECT o.value FROM observations o JOIN results r ON r.id = o.result_pk "
                "WHERE r.result_id = 'CY2403150088' AND r.version > 2 AND o.local_code = 'GLU'")).scalar_one()
            stored = " ".join(row[0] for row in conn.execute(text("SELECT event FROM results")))
        assert head > 2 and glu == 7.2  # the stale final did not move the head back
        assert CHAOYANG_ID not in stored and WUHAN_ID not in stored
        assert "白细胞计数" in stored  # GBK text arrived intact
    finally:
        for srv in servers.values():
            srv.stop()
        publisher.close()
        journal.close()


def test_broker_down_refuses_everything_then_stores_retries_exactly_once(  # type: ignore[no-untyped-def]
        broker, database, book, pseudonymizer, tmp_path) -> None:
    publisher = Publisher(broker.bootstrap, timeout_s=1.0)
    journal = AckJournal(tmp_path / "hl7-acks.db")
    server = _listener(book, pseudonymizer, publisher, journal, "bj-chaoyang-001").start()
    replacement: EmbeddedBroker | None = None
    engine: tuple[threading.Event, threading.Thread] | None = None
    retried = [renumber(CHAOYANG, n) for n in (10, 11)]
    try:
        with mllp.MLLPClient(*server.address) as client:
            assert fields(client.send(CHAOYANG))["MSA-1"] == "AA"  # the producer is connected when the broker dies
            port = broker.port
            broker.stop()
            answers = [fields(client.send(raw)) for raw in retried]
            assert [a["MSA-1"] for a in answers] == ["AE", "AE"]  # refusals only: zero positive acknowledgements
            assert all(a["ERR-3"].startswith("207^") and "resend later" in a["ERR-8"] for a in answers)
            assert journal.count() == 1
            replacement = EmbeddedBroker(port=port, log_path=tmp_path / "tansu-2.log").start()
            ensure_topics(replacement.bootstrap, DEFAULT_PARTITIONS)
            engine = start_engine(replacement.bootstrap, database)
            for raw in retried + retried:  # the sender retries; then resends once more (duplicates)
                assert fields(client.send(raw))["MSA-1"] == "AA"
        wait_for(lambda: _count(database) == 2)
        for n in (10, 11):
            assert _count(database, "result_id = :r", r=f"CY-R-{n:06d}") == 1
        # (the first message went to the old tansu broker, which keeps nothing once stopped: memory-only)
        assert journal.count() == 3
    finally:
        server.stop()
        publisher.close()
        journal.close()
        if engine:
            engine[0].set()
            engine[1].join(15)
        if replacement:
            replacement.stop()
