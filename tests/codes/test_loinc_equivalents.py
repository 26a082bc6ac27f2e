"""loinc_equivalents.csv: several LOINC codes per unified item, validated, so that the FHIR R4 specification's
own example lab results map (tests/data/fhir/r4-spec-examples.json, taken from hl7.fhir.r4.examples)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from codes import CodeBook
from codes.loader import load_dir
from codes.mapping import infer_report_item, map_code, map_observation

EXAMPLES = json.loads((Path(__file__).parent.parent / "data/fhir/r4-spec-examples.json").read_text("utf-8"))
LOINC = "http://loinc.org"


class Sent:
    def __init__(self, code: str, system: str | None = LOINC, display: str | None = None) -> None:
        self.code, self.system, self.display, self.qualifier = code, system, display, None


class Reading:
    kind = "quantity"
    comparator = text = ref_text = interpretation = ref_low = ref_high = date = None

    def __init__(self, number: float | None, unit: str | None) -> None:
        self.number, self.unit = number, unit


def _observation(book: CodeBook, seq: int, sent: dict[str, Any]) -> dict[str, Any]:
    # what adapters/fhir.py reads: the UCUM code when the quantity names UCUM, else the unit text
    return map_observation(book, "zj-nb-001", seq, [Sent(sent["code"], LOINC, sent["display"])],
                           Reading(sent["value"], sent["ucum"] or sent["unit"]))


@pytest.mark.parametrize("report", EXAMPLES["reports"], ids=lambda r: r["file"])
def test_the_fhir_specifications_reports_map(book: CodeBook, report: dict[str, Any]) -> None:
    observations = [_observation(book, i, o) for i, o in enumerate(report["observations"])]
    unmapped = [(o["item"]["local_code"], o["item"]["mapping_issue"]) for o in observations
                if o["item"]["unified_code"] is None]
    assert unmapped == []
    for obs in observations:
        assert obs["unit"] == book.items[obs["item"]["unified_code"]].unit


def test_the_lipid_panel_maps_four_of_four_and_the_report_is_the_panel(book: CodeBook) -> None:
    lipids = next(r for r in EXAMPLES["reports"] if r["file"] == "Bundle-lipids.json")
    observations = [_observation(book, i, o) for i, o in enumerate(lipids["observations"])]
    assert [(o["item"]["local_code"], o["item"]["unified_code"], o["value"]) for o in observations] == [
        ("35200-5", "L0037", 6.3), ("35217-9", "L0038", 1.3), ("2085-9", "L0039", 1.3), ("13457-7", "L0040", 4.6)]
    item, _ = map_code(book, "zj-nb-001", [Sent(lipids["code"])])
    assert item["unified_code"] == "L0266"
    assert set(book.items["L0266"].components) == {o["item"]["unified_code"] for o in observations}


def test_a_cbc_report_under_an_unmapped_panel_code_says_ambiguous(book: CodeBook) -> None:
    cbc = next(r for r in EXAMPLES["reports"] if r["file"] == "Bundle-101.json")
    observations = [_observation(book, i, o) for i, o in enumerate(cbc["observations"])]
    item, _ = map_code(book, "zj-nb-001", [Sent(cbc["code"])])
    report_item = infer_report_item(item, observations)
    assert (report_item["unified_code"], report_item["mapping_issue_code"]) == (None, "ambiguous")


def test_single_example_observations(book: CodeBook) -> None:
    found = {o["code"]: _observation(book, 0, o) for o in EXAMPLES["observations"]}
    assert (found["15074-8"]["item"]["unified_code"], found["15074-8"]["value"]) == ("L0032", 6.3)
    assert (found["718-7"]["value"], found["718-7"]["unit"]) == (72.0, "g/L")  # g/dL → g/L by scale
    assert found["20570-8"]["item"]["unified_code"] == "L0168"
    # Bundle-report writes "K/ul" without a UCUM code: UCUM reads K as kelvin, so the code maps but the unit
    # does not convert — the reason says so
    wbc = found["26464-8"]["item"]
    assert (wbc["unified_code"], wbc["mapping_issue_code"]) == (None, "unit_not_convertible")
    assert "L0165" in wbc["mapping_issue"]


def _problems(data: Path) -> list[str]:
    _, problems = load_dir(data)
    return [f"{Path(p.file).name}:{p.line}: {p.message}" for p in problems]


def test_equivalents_are_validated(data_copy: Path) -> None:
    path = data_copy / "loinc_equivalents.csv"
    path.write_text(path.read_text("utf-8") + "L0045,6298-5,bad check digit\nL9999,2947-0,unknown item\n"
                    "I0001,24331-1,not a lab item\nL0046,6298-4,already an equivalent of potassium\n"
                    "L0046,2823-3,already potassium's own code\n", "utf-8")
    got = "\n".join(_problems(data_copy))
    lines = path.read_text("utf-8").splitlines()
    first = len(lines) - 4
    assert f"loinc_equivalents.csv:{first}: L0045: LOINC code '6298-5' fails its check digit (expected 6298-4)" in got
    assert f"loinc_equivalents.csv:{first + 1}: unknown unified_code 'L9999'" in got
    assert f"loinc_equivalents.csv:{first + 2}: I0001: only lab items carry LOINC codes" in got
    assert f"loinc_equivalents.csv:{first + 3}: L0046: LOINC 6298-4 already belongs to an item" in got
    assert f"loinc_equivalents.csv:{first + 4}: L0046: LOINC 2823-3 already belongs to an item (items.csv:" in got


def test_every_shipped_equivalent_is_a_distinct_valid_code(book: CodeBook) -> None:
    codes = [c for item in book.items.values() for c in item.loinc_equivalents]
    assert len(codes) == len(set(codes)) >= 18
    own = {item.loinc for item in book.items.values() if item.loinc}
    assert not own & set(codes)
    assert all(book.items[book.item_by_loinc(c).code].is_lab for c in codes)
