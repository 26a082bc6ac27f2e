"""codes.mapping: the map step on plain data — alternatives, systems as sent, units, report and imaging items."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from codes import CodeBook, load_codebook
from codes.book import SHIPPED_DIR
from codes.mapping import NoCode, convert_units, imaging_item, infer_report_item, map_code, map_observation
from codes.model import Mapping

LOINC_SPELLINGS = ("http://loinc.org", "LN", "LOINC", "urn:oid:2.16.840.1.113883.6.1",
                   "HTTP://LOINC.ORG", "ln", "Loinc", "URN:OID:2.16.840.1.113883.6.1", " LN ")


@dataclass(frozen=True)
class Sent:
    """A code as sent, without anything from adapters/: codes.mapping needs only these four attributes."""

    code: str
    system: str | None = None
    display: str | None = None
    qualifier: str | None = None


@dataclass(frozen=True)
class Reading:
    kind: str = "quantity"
    number: float | None = None
    comparator: str | None = None
    text: str | None = None
    unit: str | None = None
    ref_low: float | None = None
    ref_high: float | None = None
    ref_text: str | None = None
    interpretation: str | None = None
    date: str | None = None


@dataclass(frozen=True)
class Shape:
    modality: str
    body_part: str | None = None
    technique: str | None = None
    description: str | None = None


@pytest.fixture(scope="module")
def own_system_book(tmp_path_factory: pytest.TempPathFactory) -> CodeBook:
    """The shipped code book plus a zj-hz-001 row declared under the hospital's own system ``99LIS``."""
    root = tmp_path_factory.mktemp("codes") / "data"
    shutil.copytree(SHIPPED_DIR, root)
    table = root / "mappings" / "zj-hz-001" / "v1.csv"
    table.write_text(table.read_text("utf-8").rstrip("\n") + "\n99LIS,XGLU,,葡萄糖(仪器),L0032,mg/dL,0.05551,,\n",
                     "utf-8")
    return load_codebook(root)


def test_the_first_alternative_that_maps_wins(book: CodeBook) -> None:
    item, mapping = map_code(book, "zj-hz-001", [Sent("NO-SUCH"), Sent("GLU", None, "葡萄糖"), Sent("ALT")])
    assert mapping is not None and mapping.unified_code == "L0032"
    assert item == {"unified_code": "L0032", "local_code": "GLU", "local_system": None, "local_name": "葡萄糖",
                    "mapping_version": "v1", "mapping_issue": None, "mapping_issue_zh": None,
                    "mapping_issue_code": None}


def test_an_unmapped_code_is_kept_with_the_reason_and_the_table_version(book: CodeBook) -> None:
    item, mapping = map_code(book, "zj-hz-001", [Sent("NO-SUCH", "99LIS", "未知"), Sent("ALSO-UNKNOWN")])
    assert mapping is None
    assert item == {"unified_code": None, "local_code": "NO-SUCH", "local_system": "99LIS", "local_name": "未知",
                    "mapping_version": "v1", "mapping_issue": "no mapping for this local code",
                    "mapping_issue_zh": "本地编码 NO-SUCH 不在本机构映射表中，也不是已知的 LOINC 编码",
                    "mapping_issue_code": "unknown_code"}


def test_no_code_at_all_is_refused(book: CodeBook) -> None:
    with pytest.raises(NoCode, match="no code given"):
        map_code(book, "zj-hz-001", [])


def test_a_row_under_the_hospitals_own_system_matches(own_system_book: CodeBook) -> None:
    item, mapping = map_code(own_system_book, "zj-hz-001", [Sent("XGLU", "99LIS")])
    assert mapping is not None and (item["unified_code"], item["local_system"]) == ("L0032", "99LIS")
    assert mapping.source_unit == "mg/dL"
    # the row is declared under 99LIS only; the same code sent as a plain local code does not reach it
    assert map_code(own_system_book, "zj-hz-001", [Sent("XGLU")])[1] is None
    # a code under the hospital's own system still finds the plain local rows
    assert map_code(own_system_book, "zj-hz-001", [Sent("GLU", "99LIS")])[0]["unified_code"] == "L0032"


@pytest.mark.parametrize("system", LOINC_SPELLINGS)
def test_a_loinc_code_maps_under_every_accepted_system_name(book: CodeBook, system: str) -> None:
    # through the items' LOINC column
    item, mapping = map_code(book, "zj-nb-001", [Sent("14749-6", system)])
    assert mapping is not None and item["unified_code"] == book.item_by_loinc("14749-6").code
    # through the hospital's own LOINC-keyed row, which carries a conversion
    item, mapping = map_code(book, "zj-hz-001", [Sent("2345-7", system)])
    assert mapping is not None and mapping.factor == pytest.approx(0.05551) and mapping.table_version == "v1"
    assert item["local_system"] == system  # what the hospital sent is kept as sent


def test_an_observation_in_the_mapped_source_unit_is_converted_and_the_original_kept(book: CodeBook) -> None:
    obs = map_observation(book, "bj-xicheng-001", 3, [Sent("BJXCGLU")],
                          Reading(number=90.0, unit="mg/dL", ref_low=70.0, ref_high=110.0, interpretation="N"))
    assert (obs["seq"], obs["item"]["unified_code"], obs["unit"]) == (3, "L0032", "mmol/L")
    assert obs["value"] == round(90 * 0.05551, 6)
    assert obs["reference_range"] == {"low": round(70 * 0.05551, 6), "high": round(110 * 0.05551, 6), "text": None}
    assert obs["original"] == {"value": 90.0, "unit": "mg/dL",
                               "reference_range": {"low": 70.0, "high": 110.0, "text": None}}
    assert obs["interpretation"] == "N"


def test_an_observation_in_the_target_unit_is_kept_as_sent(book: CodeBook) -> None:
    obs = map_observation(book, "bj-xicheng-001", 0, [Sent("BJXCGLU")], Reading(number=5.2, unit="mmol/L"))
    assert (obs["value"], obs["unit"], obs["original"], obs["reference_range"]) == (5.2, "mmol/L", None, None)
    assert obs["item"]["unified_code"] == "L0032"


def test_an_unconvertible_unit_unmaps_the_observation_and_keeps_the_value(book: CodeBook) -> None:
    obs = map_observation(book, "bj-xicheng-001", 0, [Sent("BJXCGLU")], Reading(number=90.0, unit="U/L"))
    assert (obs["item"]["unified_code"], obs["value"], obs["unit"], obs["original"]) == (None, 90.0, "U/L", None)
    assert obs["item"]["mapping_issue_code"] == "unit_not_convertible"
    assert obs["item"]["mapping_issue"] == ("the code maps to L0032, but unit 'U/L' cannot be converted to the "
                                            "item's unit 'mmol/L'")
    assert "U/L" in obs["item"]["mapping_issue_zh"] and "mmol/L" in obs["item"]["mapping_issue_zh"]
    missing = map_observation(book, "bj-xicheng-001", 0, [Sent("BJXCGLU")], Reading(number=5.0, unit=None))
    assert (missing["item"]["unified_code"], missing["item"]["mapping_issue_code"]) == (None, "unit_not_convertible")
    assert "has no unit" in missing["item"]["mapping_issue"]


def test_only_quantities_are_converted(book: CodeBook) -> None:
    obs = map_observation(book, "bj-xicheng-001", 0, [Sent("BJXCGLU")],
                          Reading(kind="text", text="阴性", unit="mg/dL", ref_text="阴性"))
    assert (obs["value_type"], obs["value_text"], obs["unit"], obs["original"]) == ("text", "阴性", "mg/dL", None)
    assert obs["reference_range"] == {"low": None, "high": None, "text": "阴性"}


def test_convert_units_with_an_offset_and_no_reference_range() -> None:
    celsius = Mapping("L9999", 5 / 9, -160 / 9, "[degF]", "Cel", "v1")
    obs = {"item": {"unified_code": "L9999", "mapping_issue": None}, "value": 212.0, "unit": "[degF]",
           "reference_range": None, "original": None}
    convert_units(obs, celsius)
    assert (obs["value"], obs["unit"], obs["reference_range"]) == (100.0, "Cel", None)
    assert obs["original"] == {"value": 212.0, "unit": "[degF]", "reference_range": None}


def test_a_report_with_one_mapped_observation_is_that_items_result() -> None:
    unmapped = {"unified_code": None, "local_code": "PANEL", "mapping_issue": "no mapping for this local code",
                "mapping_issue_zh": "本地编码 PANEL 不在本机构映射表中", "mapping_issue_code": "unknown_code"}
    glucose = {"item": {"unified_code": "L0032"}}
    potassium = {"item": {"unified_code": "L0045"}}
    inferred = infer_report_item(unmapped, [glucose])
    assert (inferred["unified_code"], inferred["mapping_issue"], inferred["local_code"]) == ("L0032", None, "PANEL")
    assert (inferred["mapping_issue_zh"], inferred["mapping_issue_code"]) == (None, None)
    assert unmapped["unified_code"] is None  # the item given is not changed
    spanning = infer_report_item(unmapped, [glucose, potassium, {"item": {"unified_code": None}}])
    assert (spanning["unified_code"], spanning["mapping_issue_code"]) == (None, "ambiguous")
    assert spanning["mapping_issue"] == ("the report's own code PANEL is not mapped and its observations map to "
                                         "several unified items (L0032、L0045)")
    assert infer_report_item(unmapped, [glucose, {"item": {"unified_code": None}}]) is unmapped
    assert infer_report_item(unmapped, [{"item": {"unified_code": None}}]) is unmapped
    mapped = {"unified_code": "L0263", "local_code": "CBC", "mapping_issue": None}
    assert infer_report_item(mapped, [glucose]) is mapped


def test_imaging_procedure_codes_come_before_the_study_shape(book: CodeBook) -> None:
    # the hospital's procedure code says CT head; the (wrong) shape would say MR lumbar spine
    item = imaging_item(book, "zj-hz-001", [Sent("CT-HEAD-P", "99RIS", "头颅CT平扫")],
                        Shape("MR", "LSPINE", "plain", "MR L-spine"))
    assert (item["unified_code"], item["local_code"], item["mapping_version"]) == ("I0001", "CT-HEAD-P", "v1")


def test_an_unmapped_procedure_code_falls_back_to_the_study_shape(book: CodeBook) -> None:
    item = imaging_item(book, "zj-hz-001", [Sent("NO-SUCH-PROC", "99RIS")], Shape("mr", "LSPINE", None, "腰椎"))
    assert item == {"unified_code": "I0088", "local_code": "NO-SUCH-PROC", "local_system": "99RIS",
                    "local_name": "腰椎", "mapping_version": "v1", "mapping_issue": None, "mapping_issue_zh": None,
                    "mapping_issue_code": None}


def test_a_study_without_procedure_codes_is_known_by_its_shape(book: CodeBook) -> None:
    item = imaging_item(book, "zj-hz-001", [], Shape("CT", "HEAD", "plain", "颅脑"))
    assert (item["unified_code"], item["local_code"], item["local_system"]) == ("I0001", "CT/HEAD/plain", "dicom")
    unknown = imaging_item(book, "zj-hz-001", [], Shape("CT", None, None))
    assert (unknown["unified_code"], unknown["local_code"]) == (None, "CT/-/-")
    assert unknown["mapping_issue"] == "no unified imaging item for this procedure / study shape"
    assert unknown["mapping_issue_code"] == "unknown_code" and unknown["mapping_version"] == "v1"


@pytest.fixture(scope="module")
def qualified_book(tmp_path_factory: pytest.TempPathFactory) -> CodeBook:
    """zj-hz-001 with a code that means two items by specimen, and no row for it without a qualifier."""
    root = tmp_path_factory.mktemp("codes") / "data"
    shutil.copytree(SHIPPED_DIR, root)
    table = root / "mappings" / "zj-hz-001" / "v1.csv"
    table.write_text(table.read_text("utf-8").rstrip("\n") + "\n,SPGLU,SERUM,葡萄糖,L0032,,,,\n"
                     ",SPGLU,CSF,脑脊液葡萄糖,L0232,,,,\n,ONEQ,CSF,脑脊液葡萄糖,L0232,,,,\n", "utf-8")
    return load_codebook(root)


def test_a_code_naming_several_items_by_qualifier_is_ambiguous_without_one(qualified_book: CodeBook) -> None:
    assert map_code(qualified_book, "zj-hz-001", [Sent("SPGLU", qualifier="CSF")])[0]["unified_code"] == "L0232"
    item, mapping = map_code(qualified_book, "zj-hz-001", [Sent("NOPE"), Sent("SPGLU")])
    assert mapping is None and (item["local_code"], item["mapping_issue_code"]) == ("SPGLU", "ambiguous")
    assert item["mapping_issue"] == ("local code SPGLU maps to several unified items by qualifier (L0032、L0232) "
                                     "and none was sent")
    # one qualified row only: the code is unknown without its qualifier, not ambiguous
    single, _ = map_code(qualified_book, "zj-hz-001", [Sent("ONEQ")])
    assert single["mapping_issue_code"] == "unknown_code"


@pytest.mark.parametrize("spelling", ["mmol/l", "mmol/L ", "mmol / L"])
def test_the_items_unit_however_spelled_is_kept_and_the_spelling_recorded(book: CodeBook, spelling: str) -> None:
    obs = map_observation(book, "bj-xicheng-001", 0, [Sent("BJXCGLU")], Reading(number=5.2, unit=spelling))
    assert (obs["item"]["unified_code"], obs["value"], obs["unit"]) == ("L0032", 5.2, "mmol/L")
    assert obs["original"] == {"value": 5.2, "unit": spelling, "reference_range": None}


def test_a_unit_reaching_the_source_unit_by_scale_takes_the_tables_factor(book: CodeBook) -> None:
    # bj-xicheng-001 converts glucose from mg/dL (molar mass in the row); g/L is 100 mg/dL
    obs = map_observation(book, "bj-xicheng-001", 0, [Sent("BJXCGLU")],
                          Reading(number=0.9, unit="g/L", ref_low=0.7, ref_high=1.1))
    assert (obs["item"]["unified_code"], obs["unit"]) == ("L0032", "mmol/L")
    assert obs["value"] == pytest.approx(90 * 0.05551)
    assert obs["reference_range"]["high"] == pytest.approx(110 * 0.05551)
    assert obs["original"]["unit"] == "g/L"


def test_a_unit_reaching_the_items_unit_by_scale_converts(book: CodeBook) -> None:
    # haemoglobin in g/dL for an item in g/L, by LOINC: no table row, a pure scale factor of 10
    obs = map_observation(book, "zj-nb-001", 0, [Sent("718-7", "http://loinc.org")],
                          Reading(number=7.2, unit="g/dl", ref_low=12.0, ref_high=16.0))
    assert (obs["item"]["unified_code"], obs["value"], obs["unit"]) == ("L0167", 72.0, "g/L")
    assert obs["reference_range"] == {"low": 120.0, "high": 160.0, "text": None}
    # a mass unit for a molar item is never converted without a table's factor (molar mass)
    glucose = map_observation(book, "zj-nb-001", 0, [Sent("2345-7", "LN")], Reading(number=99.0, unit="mg/dL"))
    assert (glucose["item"]["unified_code"], glucose["value"]) == (None, 99.0)
    assert glucose["item"]["mapping_issue_code"] == "unit_not_convertible"
    assert "L0032" in glucose["item"]["mapping_issue"]  # the code did map: never "not mapped"
