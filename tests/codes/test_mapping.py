"""Local code mapping: unit conversion, qualifiers, LOINC fallback and precedence, versions."""

from __future__ import annotations

import pytest

LOINC = "http://loinc.org"


def test_local_code_with_unit_conversion(book):
    m = book.map_code("bj-xicheng-001", "BJXCGLU")
    glucose = book.item_by_loinc("14749-6")
    assert m.unified_code == glucose.code
    assert (m.source_unit, m.target_unit) == ("mg/dL", "mmol/L")
    assert m.convert(100) == pytest.approx(5.55, abs=0.01)  # 100 mg/dL glucose = 5.55 mmol/L
    chol = book.map_code("bj-xicheng-001", "BJXCTC")
    assert chol.convert(200) == pytest.approx(5.17, abs=0.01)
    crea = book.map_code("bj-xicheng-001", "BJXCCREA")
    assert (crea.target_unit, round(crea.convert(1.0), 2)) == ("umol/L", 88.42)
    assert m.table_version == "v1"


def test_same_unit_is_identity(book):
    m = book.map_code("zj-hz-001", "GLU")
    assert (m.factor, m.offset, m.source_unit, m.target_unit) == (1.0, 0.0, "mmol/L", "mmol/L")


def test_qualifier(book):
    serum = book.map_code("zj-hz-001", "GLU")
    csf = book.map_code("zj-hz-001", "GLU", qualifier="CSF")
    assert book.items[csf.unified_code].specimen == "csf"
    assert csf.unified_code != serum.unified_code
    # an unknown qualifier falls back to the unqualified row
    assert book.map_code("zj-hz-001", "GLU", qualifier="serum").unified_code == serum.unified_code


def test_loinc_fallback_through_items(book):
    # no hospital row keyed by 2823-3: the items' LOINC column maps it
    m = book.map_code("zj-hz-001", "2823-3", system=LOINC)
    assert m.unified_code == book.item_by_loinc("2823-3").code
    assert (m.factor, m.table_version) == (1.0, "loinc")
    assert book.map_code("he-zhengding-002", "14749-6", system="LN").unified_code == book.item_by_loinc("14749-6").code


def test_hospital_row_wins_over_loinc_column(book):
    # zj-hz-001's analyser sends glucose as 2345-7 (mg/dL); its own row converts
    m = book.map_code("zj-hz-001", "2345-7", system=LOINC)
    assert m.unified_code == book.item_by_loinc("14749-6").code
    assert m.factor == pytest.approx(0.05551)
    assert m.table_version == "v1"
    # another hospital without such a row reaches the item through loinc_equivalents.csv, without a factor:
    # only a value in the item's unit (mmol/L) can then be used (codes/mapping.py convert_units)
    other = book.map_code("zj-nb-001", "2345-7", system=LOINC)
    assert (other.unified_code, other.factor, other.source_unit, other.table_version) == ("L0032", 1.0, "mmol/L", "loinc")


def test_unmapped_is_none(book):
    assert book.map_code("zj-hz-001", "NO-SUCH-CODE") is None
    assert book.map_code("zj-hz-001", "9999-9", system=LOINC) is None
    assert book.map_code("zj-hz-001", "") is None
    # a local code is not looked up as LOINC and vice versa
    assert book.map_code("zj-hz-001", "GLU", system=LOINC) is None
    assert book.map_code("zj-hz-001", "14749-6") is None


def test_versions(book):
    assert book.mapping_version("zj-hz-002") == "v2"  # the highest version applies
    last_row_code = "XHQ-P" + "CT"  # PCT is only in v2 (v1 holds the first 20 rows)
    assert book.map_code("zj-hz-002", last_row_code).table_version == "v2"
    assert book.map_code("zj-hz-002", last_row_code, version="v1") is None
    assert book.mapping_version("nope") is None


def test_imaging_codes_map_through_the_imaging_table(book):
    # procedure codes live in imaging_mappings/, not in the lab table
    assert book.map_code("zj-hz-001", "CT-HEAD-P") is None
    m = book.map_study("zj-hz-001", [("CT-HEAD-P", "99RIS")], modality="MR", body_part="LSPINE", technique=None)
    assert book.items[m.unified_code].modality == "CT"
    assert (m.table_version, m.matched_by) == ("v1", "procedure_code")


def test_imaging_item_lookup(book):
    assert book.imaging_item("CT", "HEAD", "plain").name_zh == "CT颅脑平扫"
    assert book.imaging_item("ct", "brain", "non-contrast").name_zh == "CT颅脑平扫"  # aliases + case
    assert book.imaging_item("CR", "CHEST", None).name_zh == "DR胸部正侧位"
    assert book.imaging_item("MR", "LSPINE", "plain+contrast").name_zh == "MR腰椎平扫+增强"
    assert book.imaging_item("CT", "HEAD", "angiography").name_zh.startswith("CT头颅血管成像")
    assert book.imaging_item("CT", "ELBOW", "contrast") is None
    assert book.imaging_item("CT", None, "plain") is None
