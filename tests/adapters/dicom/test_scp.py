"""The storage SCP against real peers: dcmtk's storescu/echoscu, the tansu broker, the engine and both stores."""
from __future__ import annotations

import threading
import uuid

import pydicom
import pynetdicom
import pytest
from prometheus_client import REGISTRY
from pynetdicom import AE
from sqlalchemy import func, select

from adapters.dicom.scp import DicomReceiver, Retrieval, ScpConfig
from adapters.dicom.spool import Spool
from adapters.pipeline import ResultPipeline
from exchange.broker import EmbeddedBroker, ensure_topics
from schemas.topics import DEFAULT_PARTITIONS
from adapters.publish import Publisher
from exchange.store.models import Result
from tests.fixtures.waiting import wait_for

from . import dicomdata as dd
from tests.fakes import FakePublisher

from .peers import INSTITUTION, echoscu, storescu

pytestmark = pytest.mark.filterwarnings("ignore:End of file reached before delimiter")


def _stored(database) -> list[tuple[str, int, str | None]]:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return sorted(conn.execute(select(Result.result_id, Result.version, Result.unified_code)).all())


def _count(database) -> int:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return conn.execute(select(func.count()).select_from(Result)).scalar_one()


def test_storescu_studies_are_published_once_and_resends_add_nothing(  # type: ignore[no-untyped-def]
        tmp_path, dcmtk, broker, database, engine_thread, book, pseudonymizer, start_receiver) -> None:
    publisher = Publisher(broker.bootstrap)
    try:
        receiver = start_receiver(ResultPipeline(book, pseudonymizer, publisher), bootstrap=broker.bootstrap,
                                  retrieval=Retrieval("PACS1", "10.0.0.5", 104, "http://pacs/wado/studies/{study}"))
        assert echoscu(receiver.port)[0] == 0
        ct, mr = dd.ct_study(tmp_path / "ct", slices=3), dd.mr_study(tmp_path / "mr")
        code, responses, out = storescu(receiver.port, ct.files + mr.files)
        assert code == 0 and responses == ["Success"] * 5, out
        wait_for(lambda: len(_stored(database)) == 2)
        assert _stored(database) == sorted([("ACC-CT-1", 1, "I0014"), (mr.uid, 1, "I0070")])
        with database.connect() as conn:
            event = conn.execute(select(Result.event).where(Result.result_id == "ACC-CT-1")).scalar_one()
        assert '"wado_rs":"http://pacs/wado/studies/' + ct.uid in event and dd.RID_CT not in event
        # the same instances again (a sender that missed our responses): 0x0000, no second event
        code, responses, out = storescu(receiver.port, ct.files + mr.files)
        assert code == 0 and responses == ["Success"] * 5, out
        assert receiver.handler.stats.duplicates == 5
        assert receiver.assembler.assemble_once() == 0 and receiver.assembler.stats.published == 2
        assert _count(database) == 2
    finally:
        publisher.close()


def test_unusable_data_sets_get_failure_statuses_and_publish_nothing(  # type: ignore[no-untyped-def]
        tmp_path, dcmtk, book, pseudonymizer, start_receiver, monkeypatch) -> None:
    publisher = FakePublisher()
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, publisher), stable_seconds=0)
    answered = {code: REGISTRY.get_sample_value("hrx_door_answers_total", {"door": "dicom", "answer": code}) or 0
                for code in ("0xC000", "0xC010", "0xA900")}
    good = dd.ct_study(tmp_path / "ct", slices=2, with_report=False)
    no_study = pydicom.dcmread(good.files[1])
    del no_study.StudyInstanceUID
    no_study.save_as(tmp_path / "no-study.dcm")
    truncated = dd.truncated(good.files[0], tmp_path / "truncated.dcm")
    corrupt = dd.corrupt(good.files[0], tmp_path / "corrupt.dcm")
    # storescu: the bundled file as shipped (no resident ID) and a file without StudyInstanceUID reach us
    _, responses, out = storescu(receiver.port, [dd.CT_SMALL, tmp_path / "no-study.dcm", truncated, corrupt])
    assert responses == ["Error: CannotUnderstand", "Error: DataSetDoesNotMatchSOPClass"], out
    # dcmtk refuses to send truncated/corrupt files itself; send their raw bytes with pynetdicom instead
    assert "Bad DICOM file" in out
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="RAWSCU")
    ae.dimse_timeout = 120  # statuses, not speed: a loaded CI host once took over pynetdicom's default 30 s
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="HRX")
    assert assoc.is_established
    try:
        statuses = [assoc.send_c_store(path) for path in (truncated, corrupt, dd.CT_SMALL)]
    finally:
        assoc.release()
    assert [s.Status for s in statuses] == [0xC000, 0xC000, 0xC010]
    assert "truncated" in statuses[0].ErrorComment and "no resident ID" in statuses[2].ErrorComment
    assert receiver.handler.stats.failed == 5 and receiver.handler.stats.stored == 0
    # each answer counted under its status word (adapters/metrics.py): 2 × 0xC000, 2 × 0xC010, 1 × 0xA900
    assert {code: (REGISTRY.get_sample_value("hrx_door_answers_total", {"door": "dicom", "answer": code}) or 0)
            - before for code, before in answered.items()} == {"0xC000": 2, "0xC010": 2, "0xA900": 1}
    assert receiver.spool.counts()["instances"] == 0
    receiver.assembler.assemble_once()
    assert publisher.records == []


def test_a_resend_with_other_content_under_the_same_sop_instance_uid_is_refused(  # type: ignore[no-untyped-def]
        tmp_path, dcmtk, book, pseudonymizer, start_receiver) -> None:
    """Same SOP Instance UID, other content (another patient): 0x0111 Duplicate SOP Instance, nothing changed;
    the identical resend stays a success."""
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()), stable_seconds=3600)
    study = dd.ct_study(tmp_path / "ct", slices=1, with_report=False)
    assert storescu(receiver.port, study.files)[1] == ["Success"]
    other = pydicom.dcmread(study.files[0])
    other.PatientID = dd.RID_MR  # another patient's resident ID, same UIDs
    other.PatientBirthDate = dd.RID_MR[6:14]
    other.save_as(tmp_path / "other.dcm", enforce_file_format=True)
    code, responses, out = storescu(receiver.port, [tmp_path / "other.dcm", study.files[0]])
    assert responses == ["Unknown Status: 0x111", "Success"], out
    assert receiver.spool.counts()["instances"] == 1
    [record] = receiver.spool.records(study.uid)
    assert record.patient["pseudonym"] == pseudonymizer.pseudonym(dd.RID_CT)


def test_allow_list_and_association_limits(tmp_path, dcmtk, book, pseudonymizer, start_receiver) -> None:  # type: ignore[no-untyped-def]
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, FakePublisher()), allow_ae=("MODALITY1",),
                              max_associations=2, max_pdu=32768)
    code, out = echoscu(receiver.port, calling="INTRUDER")
    assert code != 0 and "Association Rejected" in out
    code, out = echoscu(receiver.port, calling="MODALITY1")
    assert code == 0, out
    assert (receiver.ae.maximum_associations, receiver.ae.maximum_pdu_size) == (2, 32768)
    # a third concurrent association is rejected (local limit exceeded)
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context("1.2.840.10008.1.1")
    held = [ae.associate("127.0.0.1", receiver.port, ae_title="HRX") for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        code, out = echoscu(receiver.port, calling="MODALITY1")
        assert code != 0 and "Association Rejected" in out
    finally:
        for a in held:
            a.release()
    with pytest.raises(ValueError, match="bounded"):
        DicomReceiver(ScpConfig(max_pdu=0), receiver.spool, receiver.assembler.pipeline, INSTITUTION)


def _engine(bootstrap, database):  # type: ignore[no-untyped-def]
    from exchange.engine import ResultEngine

    publisher = Publisher(bootstrap)
    worker = ResultEngine(bootstrap, database, f"test-{uuid.uuid4().hex[:8]}", publisher, session_timeout_ms=6000)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    return worker, stop, thread, publisher


def test_broker_down_refuses_only_and_the_resend_is_stored_exactly_once(  # type: ignore[no-untyped-def]
        tmp_path, dcmtk, broker, database, book, pseudonymizer, start_receiver) -> None:
    """--broker-grace 0: while the broker is down every C-STORE is refused (0xA700), never acknowledged."""
    port = broker.port
    broker.stop()
    publisher = Publisher(broker.bootstrap, timeout_s=2.0)
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, publisher), bootstrap=broker.bootstrap,
                              broker_grace=0.0)
    ct, mr = dd.ct_study(tmp_path / "ct", slices=2), dd.mr_study(tmp_path / "mr")
    code, responses, out = storescu(receiver.port, ct.files + mr.files)
    assert responses == ["Refused: OutOfResources"] * 4, out  # storescu -nh exits 0 regardless
    assert receiver.handler.stats.stored == 0 and receiver.spool.counts()["instances"] == 0

    revived = EmbeddedBroker(port=port, log_path=tmp_path / "tansu-2.log").start()
    _worker, stop, thread, engine_publisher = _engine(revived.bootstrap, database)
    try:
        ensure_topics(revived.bootstrap, DEFAULT_PARTITIONS)
        wait_for(lambda: receiver.watch.refusal() is None)
        code, responses, out = storescu(receiver.port, ct.files + mr.files)  # the sender retries
        assert code == 0 and responses == ["Success"] * 4, out
        wait_for(lambda: len(_stored(database)) == 2, timeout=60)
        storescu(receiver.port, ct.files + mr.files)  # and once more: duplicates
        assert receiver.assembler.assemble_once() == 0
        assert _stored(database) == sorted([("ACC-CT-1", 1, "I0014"), (mr.uid, 1, "I0070")])
    finally:
        stop.set()
        thread.join(15)
        engine_publisher.close()
        publisher.close()
        revived.stop()


def test_broker_down_with_the_spool_acknowledges_durably_and_publishes_after_recovery(  # type: ignore[no-untyped-def]
        tmp_path, dcmtk, broker, database, book, pseudonymizer, start_receiver) -> None:
    """Default spool mode: 0x0000 means fsynced to the spool; a restarted SCP publishes once the broker is back."""
    port = broker.port
    broker.stop()
    down = Publisher(broker.bootstrap, timeout_s=1.0)
    spool_dir = tmp_path / "spool"
    first = start_receiver(ResultPipeline(book, pseudonymizer, down), spool_dir=spool_dir,
                           bootstrap=broker.bootstrap, stable_seconds=0.2)
    ct = dd.ct_study(tmp_path / "ct", slices=2)
    code, responses, out = storescu(first.port, ct.files)
    assert code == 0 and responses == ["Success"] * 3, out
    wait_for(lambda: first.assembler.stats.publish_failures >= 1)
    first.stop()
    first.spool.close()
    down.close()

    revived = EmbeddedBroker(port=port, log_path=tmp_path / "tansu-2.log").start()
    _worker, stop, thread, engine_publisher = _engine(revived.bootstrap, database)
    publisher = Publisher(revived.bootstrap)
    try:
        ensure_topics(revived.bootstrap, DEFAULT_PARTITIONS)
        second = DicomReceiver(ScpConfig(host="127.0.0.1", port=0, stable_seconds=0.2), Spool(spool_dir),
                               ResultPipeline(book, pseudonymizer, publisher), INSTITUTION)
        second.start()  # the spooled study is published by the restarted process without any resend
        try:
            wait_for(lambda: len(_stored(database)) == 1, timeout=60)
            code, responses, out = storescu(second.port, ct.files)
            assert responses == ["Success"] * 3 and second.handler.stats.duplicates == 3, out
            assert second.assembler.assemble_once() == 0
            assert _stored(database) == [("ACC-CT-1", 1, "I0014")]
        finally:
            second.stop()
            second.spool.close()
    finally:
        stop.set()
        thread.join(15)
        engine_publisher.close()
        publisher.close()
        revived.stop()
