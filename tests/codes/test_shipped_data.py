"""The shipped demo data loads cleanly and is shaped like the real programmes."""

from __future__ import annotations

import csv
from datetime import date, datetime
from decimal import Decimal

import pytest

from codes.book import SHIPPED_DIR
from codes.loader import load_dir
from codes.loinc import is_valid_loinc
from codes.units import is_valid_ucum


def test_loads_with_zero_problems():
    _, problems = load_dir(SHIPPED_DIR)
    assert problems == []


def test_sizes(book):
    lab = [i for i in book.items.values() if i.is_lab]
    exams = [i for i in book.items.values() if i.kind in ("imaging", "function")]
    assert len(lab) >= 200
    assert len(exams) >= 150
    assert len(book.institutions) >= 15
    assert len({i.city for i in book.institutions.values()}) >= 6
    assert len({i.province for i in book.institutions.values()}) >= 4
    assert len(book.alliances) >= 3
    regions_represented = {r for inst in book.institutions.values() for r in book.region_ids(inst)}
    assert regions_represented >= {"jjj", "yrd", "cy"}
    for alliance in book.alliances:
        assert len(book.alliance_members(alliance)) >= 2


def test_every_loinc_valid_and_unique():
    rows = list(csv.DictReader(open(SHIPPED_DIR / "items.csv", encoding="utf-8")))
    loincs = [r["loinc"] for r in rows if r["loinc"]]
    assert len(loincs) > 100
    bad = [c for c in loincs if not is_valid_loinc(c)]
    assert bad == []
    assert len(loincs) == len(set(loincs))


def test_every_unit_parses():
    units = {r["unit"] for r in csv.DictReader(open(SHIPPED_DIR / "items.csv", encoding="utf-8")) if r["unit"]}
    for path in (SHIPPED_DIR / "mappings").rglob("*.csv"):
        units |= {r["source_unit"] for r in csv.DictReader(open(path, encoding="utf-8")) if r["source_unit"]}
    assert [u for u in sorted(units) if not is_valid_ucum(u)] == []


def test_item_shape(book):
    glucose = book.item_by_loinc("14749-6")
    assert glucose is not None and glucose.unit == "mmol/L" and glucose.category == "biochemistry"
    # the mass-concentration code is an equivalent (loinc_equivalents.csv), not the item's own code
    assert glucose.loinc == "14749-6" and "2345-7" in glucose.loinc_equivalents
    assert book.item_by_loinc("2345-7") is glucose
    cbc = next(i for i in book.items.values() if i.loinc == "57021-8")
    assert cbc.kind == "lab_panel" and len(cbc.components) >= 20
    assert all(book.items[c].kind == "lab_analyte" for c in cbc.components)
    ct_head = book.imaging_item("CT", "HEAD", "plain")
    assert ct_head is not None and ct_head.name_zh == "CT颅脑平扫"


def test_prices(book):
    ct = book.imaging_item("CT", "HEAD", "plain")
    assert book.price(ct.code, "33") == Decimal("180")
    assert book.price(ct.code, "11") == Decimal("207.0")  # Beijing override
    assert book.price(ct.code, "110000") == Decimal("207.0")
    assert book.price("NOPE", "33") is None


def test_institution_lookup(book):
    inst = book.institution("zj-hz-001")
    assert (inst.province, inst.city, inst.grade) == ("33", "3301", "三甲")
    with pytest.raises(KeyError, match="unknown institution 'nope'"):
        book.institution("nope")
    jinan = book.institution("sd-jinan-001")
    glucose = book.item_by_loinc("14749-6")
    ct = book.imaging_item("CT", "HEAD", "plain")
    assert book.region_ids(jinan, glucose) == ("jjj",)  # 京津冀鲁: Shandong for lab items
    assert book.region_ids(jinan, ct) == ()


def test_version_is_stable(book):
    from codes import load_codebook
    assert load_codebook(SHIPPED_DIR).version == book.version
    assert book.version.startswith("sha256:")


def test_labunits_cross_check():
    """Conversion factors in the demo mapping tables agree with labunits (MIT; not clinically validated)."""
    conv = pytest.importorskip("labunits.converters")
    table = {a.loinc_num: a for a in conv.analytes()} if hasattr(conv, "analytes") else None
    if not table:
        pytest.skip("labunits has no analytes() listing")
    rows = list(csv.DictReader(open(SHIPPED_DIR / "mappings" / "bj-xicheng-001" / "v1.csv", encoding="utf-8")))
    factors = {r["local_code"]: float(r["factor"]) for r in rows if r["factor"]}
    # glucose 2345-7, triglycerides 2571-8, creatinine 2160-0: labunits is keyed by the mass codes
    for local, loinc in (("BJXCGLU", "2345-7"), ("BJXCTG", "2571-8"), ("BJXCCREA", "2160-0")):
        assert factors[local] == pytest.approx(table[loinc].conversion_factor, rel=0.005)


def test_catalogue_validity_from_domain(book):
    """Hubei list (鄂卫通〔2023〕56号): K 7 days, glucose 30 days, HbA1c 60 days; Zhejiang flat 30."""
    at = datetime(2024, 6, 1, 12, 0)
    hb = next(c for c in book.catalogues_in_force(at) if c.id == "hb-province")
    assert hb.item(book.item_by_loinc("2823-3").code).valid_days == 7
    assert hb.item(book.item_by_loinc("14749-6").code).valid_days == 30
    assert hb.item(book.item_by_loinc("4548-4").code).valid_days == 60
    zj = next(c for c in book.catalogues_in_force(at) if c.id == "zj-province")
    assert {ci.valid_days for ci in zj.items.values()} == {30}
    assert len(zj.items) == 443


def test_qc_certificates(book):
    inst = book.institution("zj-hz-002")
    hbv = book.item_by_loinc("42595-9")
    cert = next(c for c in inst.qc if c.item == hbv.code)
    assert cert.covers(hbv, date(2023, 12, 31))
    assert not cert.covers(hbv, date(2024, 1, 1))  # valid_to is inclusive
    glucose = book.item_by_loinc("14749-6")
    assert inst.qc_for(glucose, date(2024, 6, 1))
    top = book.institution("zj-hz-001").qc_for(glucose, date(2024, 6, 1))[0]
    assert top.satisfies("province", glucose, date(2024, 6, 1))
    assert top.satisfies(None, glucose, date(2030, 1, 1))
    city_cert = book.institution("zj-tonglu-001").qc_for(glucose, date(2024, 6, 1))[0]
    assert not city_cert.satisfies("province", glucose, date(2024, 6, 1))


def test_readme_documents_every_file():
    readme = (SHIPPED_DIR.parent / "README.md").read_text(encoding="utf-8")
    names = {p.name for p in SHIPPED_DIR.iterdir() if p.is_file()} | {"mappings/", "catalogues/"}
    for name in names:
        assert name.rstrip("/") in readme, name


def test_cli_codes_option(data_copy):
    from click.testing import CliRunner
    from codes.cli import catalogue
    (data_copy / "catalogues" / "national-core-2025.yaml").unlink()
    res = CliRunner().invoke(catalogue, ["--codes", str(data_copy), "coverage", "--json", "--at", "2026-01-01"])
    assert res.exit_code == 0, res.output
    assert "national" not in {r["tier"] for r in __import__("json").loads(res.output)["rows"]}
