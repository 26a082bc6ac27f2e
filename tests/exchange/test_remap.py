"""Unmapped codes are kept and listed; a new mapping table re-maps them without the hospital resending."""
from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from adapters.report import Code, ImagingReport, LabObservation, LabReport, Patient, Study, Value

from adapters.pipeline import ResultPipeline
from codes import default_codes_dir, load_codebook
from exchange.decisions import find_result
from schemas.resident_id import make_resident_id
from exchange.remap import remap
from exchange.store import Delivery, current_results, ingest, unmapped_codes

INSTITUTION = "bj-chaoyang-001"


def _report(result_id: str) -> LabReport:
    return LabReport(
        institution=INSTITUTION, result_id=result_id, version=2, status="final",
        patient=Patient(make_resident_id("11010519800312002")), codes=[Code("NEWGLU")],
        observations=[LabObservation([Code("NEWGLU", None, "新血糖")],
                                     Value("quantity", 90.0, unit="mg/dL", ref_low=70.0, ref_high=110.0)),
                      LabObservation([Code("K")], Value("quantity", 4.0, unit="mmol/L"))],
        reported_at=datetime(2026, 11, 20, 8, tzinfo=UTC))


def _codes_with_new_table(tmp_path: Path) -> Path:
    root = tmp_path / "codes"
    shutil.copytree(default_codes_dir(), root)
    table = root / "mappings" / INSTITUTION
    newest = sorted(table.glob("*.csv"))[-1].read_text("utf-8")
    (table / "v9.csv").write_text(newest.rstrip("\n") + "\n,NEWGLU,,新血糖,L0032,mg/dL,0.05551,,added later\n",
                                  "utf-8")
    return root


def test_unmapped_then_remapped_after_a_new_table(book, pseudonymizer, database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    event = ResultPipeline(book, pseudonymizer).lab_event(_report("R-NEW-1"), "fhir")
    assert event["observations"][0]["item"]["unified_code"] is None
    with database.begin() as conn:
        ingest(conn, [Delivery(event)])
    with database.connect() as conn:
        listed = unmapped_codes(conn)
    assert [(u.issuer, u.local_code, u.results) for u in listed] == [(INSTITUTION, "NEWGLU", 1)]
    assert remap(database, book).changed == 0  # same tables: nothing to do

    newer = load_codebook(_codes_with_new_table(tmp_path))
    assert newer.mapping_version(INSTITUTION) == "v9"
    report = remap(database, newer)
    assert (report.changed, report.newly_mapped) == (1, 2)  # the observation and the report item
    with database.connect() as conn:
        assert unmapped_codes(conn) == []
        [stored] = current_results(conn, event["patient"]["pseudonym"])
    glucose = stored.observations[0]
    assert (glucose.unified_code, glucose.unit) == ("L0032", "mmol/L")
    assert glucose.value == round(90 * 0.05551, 6) and glucose.ref_low == round(70 * 0.05551, 6)
    assert stored.unified_code == "L0032" and stored.observations[1].unified_code == "L0045"
    with database.connect() as conn:
        full = find_result(conn, f"{INSTITUTION}/R-NEW-1")
    assert full is not None and full.event["observations"][0]["original"]["value"] == 90.0
    assert full.event["observations"][0]["item"]["unified_code"] == "L0032"
    assert remap(database, newer).changed == 0


def _imaging_report(result_id: str, study: Study) -> ImagingReport:
    return ImagingReport(institution="zj-hz-001", result_id=result_id, version=1, status="final",
                         patient=Patient(make_resident_id("11010519800312002")), study=study,
                         reported_at=datetime(2026, 11, 20, 8, tzinfo=UTC))


def test_unmapped_codes_are_listed_by_reason(book, pseudonymizer, database, database_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pipeline = ResultPipeline(book, pseudonymizer)
    lab = replace(_report("R-WHY-1"), codes=[Code("PANEL-X")], observations=[
        LabObservation([Code("NEWGLU")], Value("quantity", 5.0, unit="mmol/L")),
        LabObservation([Code("K")], Value("quantity", 4.0, unit="U/L")),
        LabObservation([Code("NA")], Value("quantity", 140.0, unit="mmol/L")),
        LabObservation([Code("CL")], Value("quantity", 100.0, unit="mmol/L"))])
    study = Study("1.2.840.99.1", "CT", body_part="ELBOW", technique="contrast")
    events = [pipeline.lab_event(lab, "fhir"), pipeline.imaging_event(_imaging_report("ACC-WHY", study), "dicom")]
    with database.begin() as conn:
        ingest(conn, [Delivery(e) for e in events])
    with database.connect() as conn:
        listed = {(u.issuer, u.local_code, u.reason): u.results for u in unmapped_codes(conn)}
    assert listed == {(INSTITUTION, "NEWGLU", "unknown_code"): 1, (INSTITUTION, "K", "unit_not_convertible"): 1,
                      (INSTITUTION, "PANEL-X", "ambiguous"): 1, ("zj-hz-001", "CT/ELBOW/contrast", "unknown_code"): 1}

    from click.testing import CliRunner

    from exchange.cli.codes import codes_group

    monkeypatch.setenv("HRX_DATABASE_URL", database_url)
    output = CliRunner().invoke(codes_group, ["unmapped"]).output
    headings = [line for line in output.splitlines() if line and not line.startswith(" ")]
    assert headings == ["未知编码 / unknown code (unknown_code): 2 个编码 / codes",
                        "单位无法换算 / unit not convertible (unit_not_convertible): 1 个编码 / codes",
                        "对应多个项目 / ambiguous (ambiguous): 1 个编码 / codes"]
    assert "PANEL-X" in output.split("ambiguous (ambiguous)")[1]


def test_imaging_results_are_remapped_when_the_imaging_table_changes(book, pseudonymizer, database,  # type: ignore[no-untyped-def]
                                                                    tmp_path) -> None:
    study = Study("1.2.840.99.2", "CT", body_part=None, technique="plain", description="胸部平扫")
    event = ResultPipeline(book, pseudonymizer).imaging_event(_imaging_report("ACC-IMG-1", study), "dicom")
    assert (event["item"]["unified_code"], event["item"]["mapping_version"]) == (None, "v1")
    with database.begin() as conn:
        ingest(conn, [Delivery(event)])
    assert remap(database, book).changed == 0  # the same tables: nothing to re-evaluate

    root = tmp_path / "codes"
    shutil.copytree(default_codes_dir(), root)
    folder = root / "imaging_mappings" / "zj-hz-001"
    (folder / "v2.csv").write_text((folder / "v1.csv").read_text("utf-8") + ",,,胸部平扫,CT,,,I0013,,added\n",
                                   "utf-8")
    newer = load_codebook(root)
    report = remap(database, newer)
    assert (report.changed, report.newly_mapped) == (1, 1)
    with database.connect() as conn:
        full = find_result(conn, "zj-hz-001/ACC-IMG-1")
        assert unmapped_codes(conn) == []
    assert full is not None and full.event["item"]["unified_code"] == "I0013"
    assert (full.event["item"]["mapping_version"], full.event["item"]["mapping_issue_code"]) == ("v2", None)
    assert remap(database, newer).changed == 0


def test_a_remap_of_one_institution_reports_progress_per_batch(book, pseudonymizer, database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from exchange.remap import pending

    pipeline = ResultPipeline(book, pseudonymizer)
    other = replace(_report("R-OTHER"), institution="bj-xicheng-001")
    with database.begin() as conn:
        ingest(conn, [Delivery(pipeline.lab_event(_report(f"R-P-{n}"), "fhir")) for n in range(5)]
               + [Delivery(pipeline.lab_event(other, "fhir"))])
    newer = load_codebook(_codes_with_new_table(tmp_path))
    assert pending(database, newer, institutions=[INSTITUTION]) == 5
    assert pending(database, newer) == 5  # the other institution's table did not change
    seen: list[int] = []
    report = remap(database, newer, batch=2, institutions=[INSTITUTION], progress=lambda r: seen.append(r.examined))
    assert seen == [2, 4, 5] and report.changed == 5
    assert pending(database, newer, institutions=[INSTITUTION]) == 0
