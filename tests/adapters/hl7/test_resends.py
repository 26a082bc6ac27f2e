"""Resends and conflicts over real MLLP, through the real tansu broker and the engine into both stores: a
resend of a message the memory-only broker lost is stored, never answered AA without being published; a
different report under a number and version already accepted is refused, before and after a restart."""
from __future__ import annotations

import threading

from sqlalchemy import text

from adapters.hl7 import AckJournal, Hl7Receiver, mllp
from adapters.publish import Publisher
from exchange.broker import EmbeddedBroker, ensure_topics
from schemas.topics import DEFAULT_PARTITIONS
from tests.adapters.hl7.hl7data import (CHAOYANG, CHAOYANG_ID, CORRECTION, WUHAN_ID, CountingPublisher, fields,
                                        replace, start_engine)
from tests.fixtures.waiting import wait_for

CONFLICT = ("conflicts with the report already accepted under this number and version; send a corrected result "
            "(OBR-25 C) with a newer time")


def _results(database, where: str = "1=1", **params) -> list[tuple]:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return [tuple(row) for row in conn.execute(text(
            f"SELECT r.result_id, r.version, r.patient, o.value FROM results r JOIN observations o "
            f"ON o.result_pk = r.id WHERE o.local_code = 'ALT' AND {where} ORDER BY r.version"), params)]


def _listener(book, pseudonymizer, publisher, journal) -> mllp.MLLPServer:  # type: ignore[no-untyped-def]
    return mllp.MLLPServer(("127.0.0.1", 0), Hl7Receiver("bj-chaoyang-001", book, pseudonymizer, publisher,
                                                         journal)).start()


def test_a_resend_of_a_message_the_broker_lost_is_published_again(  # type: ignore[no-untyped-def]
        broker, database, book, pseudonymizer, tmp_path) -> None:
    """The embedded broker keeps everything in memory: restarted between a message and its resend, it lost
    the first copy before the engine stored it. The resend is published again, then gets the stored ACK."""
    publisher = Publisher(broker.bootstrap, timeout_s=1.0)
    journal = AckJournal(tmp_path / "hl7-acks.db")
    server = _listener(book, pseudonymizer, publisher, journal)
    replacement: EmbeddedBroker | None = None
    engine: tuple[threading.Event, threading.Thread] | None = None
    try:
        with mllp.MLLPClient(*server.address) as client:
            first = client.send(CHAOYANG)
            assert fields(first)["MSA-1"] == "AA"  # in the broker, not yet stored (no engine is running)
            port = broker.port
            broker.stop()  # ... and gone with it
            refused = fields(client.send(CHAOYANG))  # the sender resends while the broker is away
            assert (refused["MSA-1"], refused["ERR-3"][:4]) == ("AE", "207^") and "resend later" in refused["ERR-8"]
            replacement = EmbeddedBroker(port=port, log_path=tmp_path / "tansu-2.log").start()
            ensure_topics(replacement.bootstrap, DEFAULT_PARTITIONS)
            engine = start_engine(replacement.bootstrap, database)
            assert client.send(CHAOYANG) == first  # published again, then the stored ACK, byte for byte
        wait_for(lambda: len(_results(database)) == 1)
        assert _results(database)[0][:2] == ("CY2403150088", 2)
        assert journal.count() == 1
    finally:
        server.stop()
        publisher.close()
        journal.close()
        if engine:
            engine[0].set()
            engine[1].join(15)
        if replacement:
            replacement.stop()


def test_a_different_report_under_an_accepted_number_and_version_is_refused(  # type: ignore[no-untyped-def]
        broker, database, engine_thread, book, pseudonymizer, tmp_path) -> None:
    publisher = CountingPublisher(broker.bootstrap, timeout_s=10)
    journal = AckJournal(tmp_path / "hl7-acks.db")
    server = _listener(book, pseudonymizer, publisher, journal)
    other_patient = replace(replace(CHAOYANG, CHAOYANG_ID, WUHAN_ID), "CY20240315000123", "CY-T-2")
    other_value = replace(replace(CHAOYANG, "|56|U/L|", "|75|U/L|"), "CY20240315000123", "CY-T-3")
    same = replace(CHAOYANG, "CY20240315000123", "CY-T-4")  # the same report in a new message: a duplicate
    placer_only = replace(replace(other_value, "CY-T-3", "CY-T-5"), "|CY-O-778899|CY2403150088|",
                          "|CY2403150088||")  # the number in OBR-2 only
    try:
        with mllp.MLLPClient(*server.address) as client:
            assert fields(client.send(CHAOYANG))["MSA-1"] == "AA"
            for raw, where in ((other_patient, "OBR^1^3"), (other_value, "OBR^1^3"), (placer_only, "OBR^1^2")):
                ack = fields(client.send(raw))
                assert (ack["MSA-1"], ack["ERR-2"], ack["ERR-3"]) == ("AE", where, "205^Duplicate key identifier^HL70357")
                assert CONFLICT in ack["ERR-8"] and ack["ERR-8"] == ack["MSA-3"]
                assert f"report CY2403150088 (OBR-{where[-1]}, version 2)" in ack["ERR-8"]
            assert publisher.published == 1  # nothing of a refused message is published
            assert fields(client.send(same))["MSA-1"] == "AA"  # same content: published again and accepted
            assert fields(client.send(CORRECTION))["MSA-1"] == "AA"  # the way to change it: a correction
        assert publisher.published == 3
        wait_for(lambda: len(_results(database)) == 2)
        [(_, final, patient, alt), (_, corrected, _, _)] = _results(database)
        assert (final, patient, alt) == (2, pseudonymizer.pseudonym(CHAOYANG_ID), 56.0) and corrected > 2
    finally:
        server.stop()
        journal.close()
    reopened = AckJournal(tmp_path / "hl7-acks.db")  # the listener restarted: the digests were committed
    server = _listener(book, pseudonymizer, publisher, reopened)
    try:
        with mllp.MLLPClient(*server.address) as client:
            ack = fields(client.send(replace(other_patient, "CY-T-2", "CY-T-6")))
            assert (ack["MSA-1"], ack["ERR-3"][:4]) == ("AE", "205^") and CONFLICT in ack["ERR-8"]
        assert publisher.published == 3
    finally:
        server.stop()
        publisher.close()
        reopened.close()
