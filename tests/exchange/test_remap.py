"""Unmapped codes are kept and listed; a new mapping table re-maps them without the hospital resending."""
from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from adapters.pipeline import Code, LabObservation, LabReport, Patient, ResultPipeline, Value
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
