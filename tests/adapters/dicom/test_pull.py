"""dicom-pull against Orthanc (Debian package) as the PACS: C-FIND from a watermark, C-MOVE, publish, resume;
studies without StudyDate, retries and giving up, --status, the Beijing start day."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pydicom
from click.testing import CliRunner
from sqlalchemy import select

from adapters.dicom.spool import Spool
from exchange.broker import free_port
from exchange.cli import main
from exchange.store.models import Result
from tests.fixtures.pseudonyms import TEST_KEY
from tests.fixtures.waiting import wait_for

from . import dicomdata as dd
from .peers import INSTITUTION, Orthanc, storescu


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
    assert third.exit_code == 0, third.output  # a study refused for its content is no PACS problem
    assert "retrieved 1 study(ies); 1 instance(s) refused as unusable" in third.output, third.output
    assert "1 study(ies) not retrieved, to retry" in third.output and "0xC010" in third.output, third.output
    wait_for(lambda: len(_stored(database)) == 3, timeout=60)
    assert ("ACC-CT-2", 1, "I0014") in _stored(database)

    fourth = pull()  # the refused study's next attempt is not due yet (--retry-delay, 10 minutes)
    assert "retrieved 0 study(ies)" in fourth.output and fourth.exit_code == 0, fourth.output
    assert "1 study(ies) wait for their next attempt" in fourth.output, fourth.output
    assert len(_stored(database)) == 3


def _pull_cli(tmp_path: Path, monkeypatch, broker, pacs: Orthanc, pull_port: int,  # type: ignore[no-untyped-def]
              spool: Path | None = None) -> Callable[..., object]:
    """``pull(*options)``: one ``hrx adapter dicom-pull`` run (a new process's worth of state) against ``pacs``."""
    monkeypatch.setenv("HRX_KAFKA_BOOTSTRAP", broker.bootstrap)
    monkeypatch.setenv("HRX_PSEUDONYM_KEY", TEST_KEY.decode())
    monkeypatch.setenv("HRX_VAR_DIR", str(tmp_path / "var"))
    args = ["adapter", "dicom-pull", "--pacs", f"127.0.0.1:{pacs.port}", "--pacs-ae", pacs.aet, "--ae", "HRXPULL",
            "--port", str(pull_port), "--host", "127.0.0.1", "--institution", INSTITUTION]
    if spool is not None:
        args += ["--spool", str(spool)]

    def pull(*extra: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, [*args, *extra], catch_exceptions=False)

    return pull


def _published_version(spool_dir: Path, study_uid: str) -> int:
    spool = Spool(spool_dir)
    try:
        row = spool.study(study_uid)
    finally:
        spool.close()
    return int(row["version"]) if row else 0


def _store(pacs: Orthanc, files: list[Path]) -> None:
    _, responses, out = storescu(pacs.port, files, called=pacs.aet)
    assert responses == ["Success"] * len(files), out


def _status_of(pacs: Orthanc, spool: Path, *extra: str):  # type: ignore[no-untyped-def]
    """``hrx adapter dicom-pull --status`` without --institution (which only a pull needs)."""
    return CliRunner().invoke(main, ["adapter", "dicom-pull", "--pacs", f"127.0.0.1:{pacs.port}", "--pacs-ae",
                                     pacs.aet, "--spool", str(spool), "--status", *extra], catch_exceptions=False)


def _status_json(pacs: Orthanc, spool: Path) -> dict:  # type: ignore[type-arg]
    result = _status_of(pacs, spool, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_pull_finds_studies_without_study_date_by_series_date(  # type: ignore[no-untyped-def]
        tmp_path, monkeypatch, dcmtk, orthanc_factory, broker) -> None:
    pull_port = free_port()
    pacs = orthanc_factory({"hrx": ["HRXPULL", "127.0.0.1", pull_port]})
    dated = dd.ct_study(tmp_path / "dated", slices=1, accession="ACC-DATED", with_report=False)  # 20040119
    undated = dd.ct_study(tmp_path / "undated", slices=2, accession="ACC-UNDATED", with_report=False)
    old = dd.ct_study(tmp_path / "old", slices=1, accession="ACC-OLD", with_report=False)
    for path in undated.files:
        ds = pydicom.dcmread(path)
        del ds.StudyDate  # Type 2 left out (an empty value is as common; Orthanc answers both alike)
        ds.SeriesDate = "20040120"
        ds.save_as(path)
    ds = pydicom.dcmread(old.files[0])
    ds.StudyDate = ""
    ds.SeriesDate = "19970430"  # before the look-back: not searched
    ds.save_as(old.files[0])
    _store(pacs, dated.files + undated.files + old.files)
    spool = tmp_path / "spool"
    pull = _pull_cli(tmp_path, monkeypatch, broker, pacs, pull_port, spool)

    first = pull("--since", "20040101", "--once")
    assert first.exit_code == 0, first.output
    assert "C-FIND: 1 study(ies) since the watermark (StudyDate >= 20031231), 1 without StudyDate" in first.output
    assert "retrieved 2 study(ies)" in first.output and "published 2 study(ies)" in first.output, first.output
    assert _published_version(spool, undated.uid) == 1 and _published_version(spool, dated.uid) == 1
    assert _published_version(spool, old.uid) == 0

    status = _status_json(pacs, spool)
    assert status["watermark"] == "20040120"  # the undated study's SeriesDate is its key date
    assert [(d["study_uid"], d["key_date"], d["by"]) for d in status["done"]] == [
        (dated.uid, "20040119", "StudyDate"), (undated.uid, "20040120", "SeriesDate")]

    again = pull("--once")  # the undated study is done like a dated one: found again, not moved again
    assert again.exit_code == 0, again.output
    assert "1 without StudyDate (SeriesDate >= 20040119), 2 already pulled" in again.output, again.output
    assert "retrieved 0 study(ies)" in again.output

    # --no-undated: the SERIES-level query is not sent
    quiet = pull("--once", "--no-undated")
    assert "studies without StudyDate not searched, 1 already pulled" in quiet.output, quiet.output


def test_refused_studies_are_retried_after_the_watermark_passed_them_then_given_up(  # type: ignore[no-untyped-def]
        tmp_path, monkeypatch, dcmtk, orthanc_factory, broker) -> None:
    pull_port = free_port()
    pacs = orthanc_factory({"hrx": ["HRXPULL", "127.0.0.1", pull_port]})
    # two studies of 20040119 without a resident ID (our SCP answers 0xC010), one good study a day later
    fixed = dd.ct_study(tmp_path / "fixed", slices=2, accession="ACC-FIXED", resident_id="", with_report=False)
    never = dd.ct_study(tmp_path / "never", slices=1, accession="ACC-NEVER", resident_id="", with_report=False)
    later = dd.ct_study(tmp_path / "later", slices=1, accession="ACC-LATER", with_report=False)
    ds = pydicom.dcmread(later.files[0])
    ds.StudyDate = "20040120"
    ds.save_as(later.files[0])
    _store(pacs, fixed.files + never.files + later.files)
    spool = tmp_path / "spool"
    pull = _pull_cli(tmp_path, monkeypatch, broker, pacs, pull_port, spool)
    retry = ("--once", "--lookback-days", "0", "--retry-delay", "0", "--retry-attempts", "3")

    first = pull("--since", "20040101", *retry)
    assert first.exit_code == 0, first.output
    # Orthanc ends a C-MOVE at the first refused instance: one per study (the rest come with a retry)
    assert "retrieved 1 study(ies); 2 instance(s) refused as unusable" in first.output, first.output
    assert "2 study(ies) not retrieved, to retry" in first.output and "0xC010" in first.output, first.output
    status = _status_json(pacs, spool)
    assert status["watermark"] == "20040120"  # the refused studies do not hold it
    assert {(r["study_uid"], r["attempts"]) for r in status["retry"]} == {(fixed.uid, 1), (never.uid, 1)}
    assert {r["reason"] for r in status["retry"]} == {
        "1 instance(s) refused as unusable (0xC010 PatientID marked as resident ID is empty)"}

    # the hospital corrects one study in its PACS (same UIDs, now with the resident ID)
    pacs.delete_study(fixed.uid)
    for path in fixed.files:
        ds = pydicom.dcmread(path)
        ds.PatientID = dd.RID_CT
        ds.save_as(path)
    _store(pacs, fixed.files)

    second = pull(*retry)  # StudyDate >= 20040120 no longer finds the 20040119 studies: retried by UID
    assert second.exit_code == 0, second.output
    assert "retrieved 1 study(ies) (1 on a retry); 1 instance(s) refused as unusable" in second.output
    assert _published_version(spool, fixed.uid) == 1
    status = _status_json(pacs, spool)
    assert [(r["study_uid"], r["attempts"]) for r in status["retry"]] == [(never.uid, 2)]
    assert status["given_up"] == []

    third = pull(*retry)  # the third attempt is the last
    assert "1 study(ies) given up after their last attempt" in third.output and never.uid in third.output
    table = _status_of(pacs, spool)
    assert table.exit_code == 0, table.output
    assert "pending retries: 0" in table.output and "given up: 1" in table.output, table.output
    given_up_line = next(line for line in table.output.splitlines() if never.uid in line)
    assert " 3 " in given_up_line and "0xC010" in given_up_line, table.output
    status = _status_json(pacs, spool)
    assert status["retry"] == [] and [g["study_uid"] for g in status["given_up"]] == [never.uid]
    assert status["given_up"][0]["given_up_at"].endswith("+08:00")

    # found again by a wider look-back: listed, not tried again (the corrected study, pruned from ``done``
    # below the narrower look-back, is moved again: its instances are duplicates, nothing is republished)
    fourth = pull(*retry, "--lookback-days", "1")
    assert fourth.exit_code == 0, fourth.output
    assert "1 found again but given up earlier" in fourth.output and never.uid not in fourth.output
    assert _status_json(pacs, spool)["given_up"][0]["attempts"] == 3
    assert _published_version(spool, fixed.uid) == 1


def test_first_pull_without_since_starts_on_todays_beijing_date(  # type: ignore[no-untyped-def]
        tmp_path, monkeypatch, orthanc_factory, broker) -> None:
    pull_port = free_port()
    pacs = orthanc_factory({"hrx": ["HRXPULL", "127.0.0.1", pull_port]})
    beijing = timezone(timedelta(hours=8))
    original = os.environ.get("TZ")
    try:
        # At any instant one of these two machine zones has another date than Beijing (UTC-12 until 20:00
        # Beijing time, UTC+14 from 18:00).
        for zone in ("WEST+12", "EAST-14"):
            os.environ["TZ"] = zone
            time.tzset()
            spool = tmp_path / f"spool-{zone}"
            before = datetime.now(beijing).strftime("%Y%m%d")
            result = _pull_cli(tmp_path, monkeypatch, broker, pacs, pull_port, spool)("--once")
            after = datetime.now(beijing).strftime("%Y%m%d")
            assert result.exit_code == 0, result.output
            watermark = _status_json(pacs, spool)["watermark"]
            assert watermark in (before, after), (zone, watermark, result.output)
            assert f"pulling from StudyDate {watermark}" in result.output
    finally:
        if original is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = original
        time.tzset()
