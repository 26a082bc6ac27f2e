"""Catalogue semantics: scope coverage, all-items alliances, grade overlays, QC levels, coverage, diff."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from click.testing import CliRunner

from codes.book import SHIPPED_DIR
from codes.cli import catalogue
from codes.tools import coverage, diff

SH = ZoneInfo("Asia/Shanghai")
AT = datetime(2025, 3, 1, tzinfo=SH)


def cat(book, cid, at=AT):
    return next(c for c in book.catalogues_in_force(at) if c.id == cid)


def test_scope_covers(book):
    hz = book.institution("zj-hz-001")
    tonglu = book.institution("zj-tonglu-001")
    jinan = book.institution("sd-jinan-001")
    wuhan = book.institution("hb-wuhan-001")
    assert cat(book, "hz-city").covers(hz, book) and cat(book, "hz-city").covers(tonglu, book)
    assert cat(book, "zj-province").covers(tonglu, book) and not cat(book, "zj-province").covers(wuhan, book)
    assert cat(book, "yrd").covers(hz, book) and not cat(book, "yrd").covers(jinan, book)
    assert cat(book, "hz-xh-alliance-all").covers(hz, book) and not cat(book, "hz-xh-alliance-all").covers(tonglu, book)
    assert cat(book, "national-core", datetime(2025, 8, 1, tzinfo=SH)).covers(wuhan, book)
    jjj = cat(book, "jjj-lab")
    glucose = book.item_by_loinc("14749-6")
    ct = book.imaging_item("CT", "HEAD", "plain")
    assert jjj.covers(jinan, book) and jjj.covers(jinan, book, glucose)
    assert not jjj.covers(jinan, book, ct)  # Shandong joined for lab items only


def test_applicable_catalogues(book):
    hz = book.institution("zj-hz-001")
    k = book.item_by_loinc("2823-3")
    ids = {c.id for c in book.applicable_catalogues(hz, AT, k)}
    assert ids == {"hz-xh-alliance-all", "hz-city", "zj-province", "yrd"}


def test_all_items_alliance(book):
    a = cat(book, "bj-cy-group-all")
    assert a.all_items and a.waive_qc and len(a.items) == len(book.items)
    ct = book.imaging_item("CT", "HEAD", "plain")
    assert a.item(ct.code).valid_days == 180  # default_valid_days by kind
    assert a.item(ct.code).qc_level is None  # waived
    tni = book.item_by_loinc("10839-9")
    assert a.item(tni.code).valid_days == 1  # explicit override
    assert cat(book, "zj-province").item(ct.code).qc_level == "province"
    assert cat(book, "zj-province").item("L9999") is None


def test_grade_overlays(book):
    zj = cat(book, "zj-province")
    assert zj.grade_allows("二甲", "独立实验室") and zj.grade_allows("独立实验室", "三甲")
    assert not zj.grade_allows("三甲", "二乙")
    assert zj.grade_allows("一级", "二乙")  # no overlay for 一级 requesters
    js = cat(book, "js-province")
    assert js.grade_allows("二乙", "二甲") and not js.grade_allows("一级", "二乙")
    assert js.grade_allows("三甲", "一级")  # higher accepting lower is optional: not restricted
    assert cat(book, "hz-city").grade_allows("三甲", "一级")


def test_coverage_counts(book):
    rows = {(r.tier, r.scope): r for r in coverage(book, AT)}
    bj = rows[("province", "110000")]
    assert (bj.lab, bj.total, bj.meets) == (181, 390, True)
    jjj = rows[("region", "jjj")]
    assert (jjj.lab, jjj.exam, jjj.total, jjj.meets) == (60, 0, 60, False)
    assert rows[("region", "cy")].lab == 81 and rows[("region", "cy")].exam == 141
    assert rows[("province", "330000")].total == 443
    alliance = rows[("alliance", "hz-xh-alliance")]
    assert alliance.total == len(book.items) and alliance.meets
    old = {(r.tier, r.scope): r for r in coverage(book, datetime(2023, 1, 1, tzinfo=SH))}
    assert old[("province", "330000")].total == 273 and old[("region", "jjj")].total == 50
    assert ("region", "cy") not in old


def test_coverage_cli(book):
    runner = CliRunner()
    res = runner.invoke(catalogue, ["coverage", "--json", "--at", "2025-03-01"], obj={})
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["items_total"] == len(book.items)
    assert any(r["scope"] == "jjj" and r["total"] == 60 and r["meets"] is False for r in doc["rows"])
    table = runner.invoke(catalogue, ["coverage", "--at", "2025-03-01"], obj={})
    assert "京津冀" in table.output and "未达标" in table.output


def test_diff_jjj_versions(book):
    d = diff(SHIPPED_DIR / "catalogues" / "region-jjj-lab-2022.yaml", SHIPPED_DIR / "catalogues" / "region-jjj-lab-2025.yaml")
    assert len(d.added) == 11 and len(d.removed) == 1
    assert book.item_by_loinc("4548-4").code in d.added
    assert {c.code for c in d.changed} == {book.item_by_loinc(x).code for x in ("3016-3", "14920-3", "14928-6")}
    assert all(c.field == "valid_days" and (c.old, c.new) == (28, 14) for c in d.changed)
    assert ("version", "2022", "2025") in d.header
    runner = CliRunner()
    res = runner.invoke(catalogue, ["diff", str(SHIPPED_DIR / "catalogues" / "region-jjj-lab-2022.yaml"),
                                    str(SHIPPED_DIR / "catalogues" / "region-jjj-lab-2025.yaml")], obj={})
    assert res.exit_code == 0 and "+ " in res.output and "新增 11 项" in res.output
