"""The operator page's data-quality and catalogue tools in a real browser against ``hrx up --demo`` (its own
stack, so that this module stands alone under xdist): a mapping added from the unmapped queue and its re-map
followed to done, coverage and the recognition rate over time drawn, a catalogue import dry run listing the rows
that did not match (and downloading them as CSV), tables downloaded as CSV and Excel. Same browser, network guard
and axe-core check as test_pages."""
from __future__ import annotations

import csv
import io
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from openpyxl import load_workbook

from adapters.publish import Publisher, Record
from codes.calendar import BEIJING
from exchange.demo import lab_bundle
from schemas.topics import TOPIC_LAB
from tests.exchange.web.test_pages import (  # noqa: F401 (fixtures)
    WANG, Demo, _post_bundle, browser, demo, log_in, no_critical_violations, page, ready, screenshot,
)
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration

NEW_CODE = "HZNEWGLU"  # local codes no mapping table of zj-hz-001 maps
OTHER_CODE = "HZNEWNA"
GLUCOSE = "L0032"  # 葡萄糖(GLU), items.csv


def _operator_token(demo: Demo) -> str:
    secret = re.search(r"secret=(\w+)", demo.secrets["demo-operator TOTP"]).group(1)  # type: ignore[union-attr]
    return httpx.post(f"{demo.base}/api/v1/auth/token", timeout=30, data={
        "grant_type": "password", "username": "demo-operator", "password": demo.secrets["demo-operator"],
        "totp": pyotp.TOTP(secret).at(time.time() + 30)}).json()["access_token"]  # the page used this step's code


def _unmapped(demo: Demo, token: str) -> set[tuple[str, str]]:
    queue = httpx.get(f"{demo.base}/api/v1/unmapped-codes", headers={"Authorization": f"Bearer {token}"},
                      timeout=30).json()
    return {(c["issuer"], c["local_code"]) for g in queue["groups"] for c in g["codes"]}


def test_operator_adds_a_mapping_sees_coverage_and_trend_imports_a_list_and_downloads_a_table(
        page: Any, demo: Demo) -> None:
    # results from Hangzhou under local codes no table maps: they wait in the unmapped queue
    for report, code, display in (("HZ-GLU-1", NEW_CODE, "葡萄糖"), ("HZ-NA-1", OTHER_CODE, "钠")):
        _post_bundle(demo, "zj-hz-001", lab_bundle(
            resident_id=WANG, institution="zj-hz-001", report_id=report, code=code, display=display,
            observations=[{"code": code, "display": display, "value": 5.4, "unit": "mmol/L"}],
            issued=(datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)))
    # and an event the engine cannot read: a dead letter
    publisher = Publisher(json.loads((demo.var / "stack.json").read_text("utf-8"))["kafka_bootstrap"])
    try:
        publisher.publish([Record(TOPIC_LAB, "zj-hz-001", b'{"not": "an event"}')])
    finally:
        publisher.close()
    log_in(page, demo, "demo-operator", totp=True)
    page.wait_for_url("**/ui/operator")
    ready(page)
    token = _operator_token(demo)
    wait_for(lambda: {("zj-hz-001", NEW_CODE), ("zj-hz-001", OTHER_CODE)} <= _unmapped(demo, token), timeout=60)
    wait_for(lambda: httpx.get(f"{demo.base}/api/v1/dead-letters", headers={"Authorization": f"Bearer {token}"},
                               timeout=30).json()["letters"], timeout=60)
    page.reload()  # the engine may have stored them after the page read the queue
    ready(page)
    row = page.locator(f'#unmapped-rows tr[data-code="zj-hz-001|{NEW_CODE}"]')

    # add the mapping from the row, by keyboard: the re-map runs to done and the code leaves the queue
    field = row.get_by_label(f"统一项目代码 ({NEW_CODE})", exact=True)
    field.fill(GLUCOSE)
    field.press("Enter")
    row.wait_for(state="detached", timeout=60_000)
    assert "重新对照完成" in page.locator("#status").inner_text()
    assert ("zj-hz-001", NEW_CODE) not in _unmapped(demo, token)

    # an unknown unified item: refused, the reason in the user's language, the row still there to correct
    other = page.locator(f'#unmapped-rows tr[data-code="zj-hz-001|{OTHER_CODE}"]')
    other.get_by_label(f"统一项目代码 ({OTHER_CODE})", exact=True).fill("NOSUCHITEM")
    other.get_by_role("button", name="添加", exact=True).click()
    page.locator("#status.status-error", has_text="请求有误").wait_for()
    assert "请求有误" in other.locator(".row-error").inner_text()  # beside the field too
    assert other.get_by_role("button", name="添加", exact=True).is_enabled()

    # the dead letter with its error, by reason
    dead = page.locator("#dead-rows tr", has_text="消息格式无效")
    assert dead.count() == 1 and TOPIC_LAB in dead.inner_text()
    letters = page.locator("#dead-form")
    letters.get_by_label("原因", exact=True).select_option(label="与已存结果冲突")
    letters.get_by_role("button", name="查询", exact=True).click()
    page.locator("#dead-rows tr", has_text="无").wait_for()
    assert "conflict" in (page.locator('.downloads[data-table="dead_letters"] a').first.get_attribute("href") or "")
    letters.get_by_label("原因", exact=True).select_option(label="消息格式无效")
    letters.get_by_role("button", name="查询", exact=True).click()
    dead.wait_for()

    # coverage against the targets per tier, as chart and table; the recognition rate over time as a line
    coverage = httpx.get(f"{demo.base}/api/v1/stats/coverage", headers={"Authorization": f"Bearer {token}"},
                         timeout=30).json()
    assert coverage["rows"]
    assert page.locator("#coverage-chart").get_attribute("data-bars") == str(len(coverage["rows"]))
    assert page.locator("#coverage-chart canvas").count() == 1
    assert page.locator("#coverage-rows tr").count() == len(coverage["rows"])
    first = coverage["rows"][0]
    assert page.locator("#coverage-rows tr").first.locator("td").nth(3).inner_text() == str(first["total"])
    assert int(page.locator("#series-chart").get_attribute("data-points") or 0) >= 1
    assert page.locator("#series-chart canvas").count() == 1
    assert "%" in (page.locator("#series-chart").get_attribute("aria-label") or "")
    page.evaluate("document.getElementById('coverage-heading').scrollIntoView()")
    screenshot(page, "operator-coverage")

    # what changed between two versions of a catalogue
    diff = httpx.get(f"{demo.base}/api/v1/catalogues/jjj-lab/diff", params={"from": "2022", "to": "2025"},
                     headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
    changes = len(diff["header"]) + len(diff["added"]) + len(diff["removed"]) + len(diff["changed"])
    assert changes
    versions = page.locator("#diff-form")
    versions.get_by_label("目录", exact=True).select_option("jjj-lab")
    versions.get_by_label("旧版本", exact=True).select_option("2022")
    versions.get_by_label("新版本", exact=True).select_option("2025")
    versions.get_by_role("button", name="比较", exact=True).click()
    page.locator("#diff-rows tr[data-change]").first.wait_for()
    assert page.locator("#diff-rows tr[data-change]").count() == changes
    assert not re.search(r"\dT\d", page.locator("#diff-rows").inner_text())  # validity in Beijing time, not ISO
    assert page.locator('.downloads[data-table="diff"] a[data-format="xlsx"]').count() == 1

    # a published list, dry run: every row that did not match is listed
    listed = "项目名称,有效天数\n钾,30\n葡萄糖,30\n不存在的项目甲,30\n"
    form = page.locator("#import-form")
    form.get_by_label("目录文件（CSV 或 Excel）", exact=True).set_input_files(
        files=[{"name": "list.csv", "mimeType": "text/csv", "buffer": listed.encode("utf-8")}])
    form.get_by_label("层级", exact=True).select_option("city")
    form.get_by_label("范围", exact=True).fill("1101")
    form.get_by_role("button", name="试导入", exact=True).click()
    page.locator("#import-rows tr", has_text="不存在的项目甲").wait_for()
    assert page.locator("#import-rows tr").count() == 1
    assert "未匹配 1 行" in page.locator("#import-summary").inner_text()
    shown = [[c.inner_text() for c in row.locator("td").all()] for row in page.locator("#import-rows tr").all()]
    # ... and downloaded as a file: the same list posted again, the API's answer saved under the name it gives
    with page.expect_download() as started:
        page.get_by_role("button", name="未匹配的行：下载 CSV", exact=True).click()
    unmatched = started.value
    assert re.fullmatch(r"city-1101-.+-unmatched\.csv", unmatched.suggested_filename), unmatched.suggested_filename
    data = Path(unmatched.path()).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    assert list(csv.reader(io.StringIO(data.decode("utf-8-sig")))) == [["line", "name", "reason"], *shown]

    # drill-down: one issuer's figures (the API's issuer=), then all again
    headers = {"Authorization": f"Bearer {token}"}
    everything = httpx.get(f"{demo.base}/api/v1/stats", headers=headers, timeout=30).json()
    issuer = max(everything["per_issuer"], key=lambda i: everything["per_issuer"][i]["presented"])
    narrowed = httpx.get(f"{demo.base}/api/v1/stats", params={"issuer": issuer}, headers=headers, timeout=30).json()
    page.locator(f'#issuer-rows button[data-drill="issuer"][data-id="{issuer}"]').click()
    page.locator('#drill button[data-undrill="issuer"]').wait_for()
    assert "只看出具机构" in page.locator("#drill").inner_text()
    assert page.locator("#issuer-rows tr").count() == len(narrowed["per_issuer"]) == 1
    assert page.locator(".kpi").first.locator(".kpi-value").inner_text() == str(narrowed["presented"])
    page.locator('#drill button[data-undrill="issuer"]').click()
    page.locator('#drill button[data-undrill="issuer"]').wait_for(state="detached")
    page.locator("#issuer-rows tr").nth(len(everything["per_issuer"]) - 1).wait_for()
    assert page.locator(".kpi").first.locator(".kpi-value").inner_text() == str(everything["presented"])

    # a period ending today (Beijing): today's presentations are in it, to the next Beijing midnight (the API's
    # ``to`` is exclusive)
    today = datetime.now(BEIJING).date()
    page.locator("#o-to").fill(today.isoformat())
    page.locator("#stats-form").get_by_role("button").click()
    link = page.locator('.downloads[data-table="per_issuer"] a[data-format="csv"]')
    wait_for(lambda: f"to={today + timedelta(days=1)}T00%3A00%3A00%2B08%3A00" in (link.get_attribute("href") or ""),
             timeout=30)
    until_today = httpx.get(f"{demo.base}/api/v1/stats", headers=headers, timeout=30, params={
        "to": f"{today + timedelta(days=1)}T00:00:00+08:00"}).json()
    assert until_today["presented"] == everything["presented"] > 0
    wait_for(lambda: page.locator(".kpi").first.locator(".kpi-value").inner_text() == str(everything["presented"]),
             timeout=30)

    # a table as CSV: UTF-8 with a BOM (Excel shows Chinese), fetched with the page's session cookie
    link = page.locator('.downloads[data-table="per_issuer"] a[data-format="csv"]')
    assert link.get_attribute("aria-label") == "按出具机构：下载 CSV"
    answer = page.request.get(f"{demo.base}{link.get_attribute('href')}")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/csv")
    assert answer.body().startswith(b"\xef\xbb\xbf")
    dead = page.request.get(f"{demo.base}/api/v1/dead-letters?format=xlsx")
    assert dead.status == 200 and dead.body()[:2] == b"PK"
    # the catalogue versions as Excel, by the page's link: the rows of the API's list
    listed = httpx.get(f"{demo.base}/api/v1/catalogues", headers=headers, timeout=30).json()["catalogues"]
    with page.expect_download() as started:
        page.get_by_role("link", name="互认目录版本：下载 Excel", exact=True).click()
    assert started.value.suggested_filename == "catalogues.xlsx"
    sheet = load_workbook(io.BytesIO(Path(started.value.path()).read_bytes())).active
    rows = list(sheet.values)
    assert rows[0][:6] == ("id", "name_zh", "tier", "scope", "authority", "version")
    assert [(r[0], r[5]) for r in rows[1:]] == [(c["id"], c["version"]) for c in listed]
    # one issuer's feedback reports, downloadable beside them
    issuer = page.locator("#o-issuer").input_value()
    feedback = page.locator('.downloads[data-table="feedback"] a[data-format="csv"]')
    assert feedback.get_attribute("aria-label") == "按出具机构查看反馈：下载 CSV"
    assert f"issuer={issuer}" in (feedback.get_attribute("href") or "")
    answer = page.request.get(f"{demo.base}{feedback.get_attribute('href')}")
    assert answer.status == 200 and answer.body().decode("utf-8-sig").startswith("feedback_id,result_ref,")
    page.evaluate("document.getElementById('diff-heading').scrollIntoView()")
    screenshot(page, "operator-catalogues")
    no_critical_violations(page, demo)

    # the same page in English, one click away: the new sections' texts come from en.json too
    page.locator("#lang-switch").click()
    ready(page)
    assert page.locator("#coverage-heading").inner_text() == "Catalogue coverage against the 2025 / 2027 targets"
    assert page.locator("#dead-heading").inner_text().startswith("Dead letters")
    assert page.locator('.downloads[data-table="coverage"] a[data-format="xlsx"]').inner_text() == "Download Excel"
    assert page.get_by_label(f"Unified item code ({OTHER_CODE})", exact=True).count() == 1
    assert "Invalid event" in page.locator("#dead-rows").inner_text()
    no_critical_violations(page, demo)
