"""dicom-pull against Orthanc (Debian package) as the PACS: C-FIND from a watermark, C-MOVE, publish, resume."""
from __future__ import annotations

import pydicom
from click.testing import CliRunner
from sqlalchemy import select

from exchange.broker import free_port
from exchange.cli import main
from exchange.store.models import Result
from tests.fixtures.pseudonyms import TEST_KEY
from tests.fixtures.waiting import wait_for

from . import dicomdata as dd
from .peers import INSTITUTION, storescu


def _stored(database) -> list[tuple[str, int, str | None]]:  # type: ignore[no-untyped-def]
    with database.connect() as conn:
        return sorted(conn.execute(select(Result.result_id, Result.version, Result.unified_code)).all())


def test_pull_publishes_new_studies_once_and_resumes_from_the_watermark(  # type: ignore[no-untyped-def]
        tmp_path, monkeypatch, dcmtk, orthanc_factory, broker, database, engine_thread) -> None:
    pull_port = free_port()
    pacs = orthanc_factory({"hrx": ["HRXPULL", "127.0.0.1", pull_port]})
    ct, mr = dd.ct_study(tmp_path / "ct", slices=2), dd.mr_study(tmp_path / "mr")
    _, responses, out = storescu(pacs.port, ct.files + mr.files, called=pacs.aet)
    assert responses == ["Success"] * 4, out
    assert len(pacs.instances()) == 4

    monkeypatch.setenv("HRX_KAFKA_BOOTSTRAP", broker.bootstrap)
    monkeypatch.setenv("HRX_PSEUDONYM_KEY", TEST_KEY.decode())
    monkeypatch.setenv("HRX_VAR_DIR", str(tmp_path / "var"))
    args = ["adapter", "dicom-pull", "--pacs", f"127.0.0.1:{pacs.port}", "--pacs-ae", pacs.aet, "--ae", "HRXPULL",
            "--port", str(pull_port), "--host", "127.0.0.1", "--institution", INSTITUTION, "--once"]

    def pull(*extra: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, [*args, *extra], catch_exceptions=False)

    first = pull("--since", "20000101")
    assert first.exit_code == 0, first.output
    assert "retrieved 2 study(ies)" in first.output and "published 2 study(ies)" in first.output
    wait_for(lambda: len(_stored(database)) == 2, timeout=60)
    assert _stored(database) == sorted([("ACC-CT-1", 1, "I0014"), (mr.uid, 1, "I0070")])
    with database.connect() as conn:
        event = conn.execute(select(Result.event).where(Result.result_id == "ACC-CT-1")).scalar_one()
    assert f'"ae_title":"{pacs.aet}"' in event and f'"port":{pacs.port}' in event

    again = pull()  # a new process: the watermark is in the spool, nothing new on the PACS
    assert again.exit_code == 0, again.output
    # the look-back (one day before the watermark) holds only the MR
    assert "1 already pulled" in again.output and "retrieved 0 study(ies)" in again.output

    # on the MR's (watermark) day: a new study, and the bundled CT as shipped (no resident ID): unusable
    late = dd.ct_study(tmp_path / "late", slices=1, accession="ACC-CT-2", with_report=False)
    ds = pydicom.dcmread(late.files[0])
    ds.StudyDate = "20040826"
    ds.save_as(late.files[0])
    anonymous = pydicom.dcmread(dd.CT_SMALL)
    anonymous.StudyDate = "20040826"
    anonymous.save_as(tmp_path / "no-resident-id.dcm")
    _, responses, out = storescu(pacs.port, [late.files[0], tmp_path / "no-resident-id.dcm"], called=pacs.aet)
    assert responses == ["Success"] * 2, out
    third = pull()
    assert third.exit_code == 0, third.output
    assert "retrieved 2 study(ies); 1 instance(s) refused as unusable" in third.output, third.output
    wait_for(lambda: len(_stored(database)) == 3, timeout=60)
    assert ("ACC-CT-2", 1, "I0014") in _stored(database)

    fourth = pull()
    assert "retrieved 0 study(ies)" in fourth.output and fourth.exit_code == 0, fourth.output
    assert len(_stored(database)) == 3
