"""What changed between two catalogue versions, and importing a published list (CSV or Excel) into the
operator's code directory, on both stores."""
from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import Engine, select

from codes import default_codes_dir, load_codebook
from exchange.api import Context, create_app
from exchange.store.models import AuditRecord
from tests.fakes import FakePublisher
from tests.fixtures.principals import Principals


@dataclass
class Desk:
    client: TestClient
    context: Context
    operator: dict[str, str]
    who: Principals
    codes: Path


@pytest.fixture
def desk(database: Engine, pseudonymizer, principals: Principals, tmp_path: Path) -> Iterator[Desk]:  # type: ignore[no-untyped-def]
    codes = tmp_path / "codes"
    shutil.copytree(default_codes_dir(), codes)
    context = Context(book=load_codebook(codes), database=database, pseudonymizer=pseudonymizer,
                      publisher=FakePublisher(), bootstrap="127.0.0.1:9", engine_group="g")  # type: ignore[arg-type]
    with TestClient(create_app(context)) as client:
        yield Desk(client, context, principals.operator(), principals, codes)


def test_what_changed_between_two_versions(desk: Desk) -> None:
    old, new = desk.context.book.catalogue_versions("jjj-lab")
    body = desk.client.get("/api/v1/catalogues/jjj-lab/diff", headers=desk.operator).json()
    assert (body["from"], body["to"]) == (old.version, new.version)  # default: the newest and the one before
    assert {i["code"] for i in body["added"]} == set(new.items) - set(old.items)
    assert {i["code"] for i in body["removed"]} == set(old.items) - set(new.items)
    changed = {(c, f) for c in set(old.items) & set(new.items) for f in ("valid_days", "qc_level", "note")
               if getattr(old.items[c], f) != getattr(new.items[c], f)}
    assert {(c["code"], c["field"]) for c in body["changed"]} == changed
    assert {h["field"] for h in body["header"]} >= {"version", "effective_from", "effective_to"}
    assert all(i["name_zh"] == desk.context.book.items[i["code"]].name_zh for i in body["added"])
    same = desk.client.get("/api/v1/catalogues/jjj-lab/diff", params={"from": new.version, "to": new.version},
                           headers=desk.operator).json()
    assert same["added"] == same["removed"] == same["changed"] == same["header"] == []
    exported = desk.client.get("/api/v1/catalogues/jjj-lab/diff", params={"format": "csv"}, headers=desk.operator)
    rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert len(rows) == len(body["added"]) + len(body["removed"]) + len(body["changed"])
    assert {r["change"] for r in rows} <= {"added", "removed", "changed"}
    refused = [desk.client.get(f"/api/v1/catalogues/{cid}/diff", params=params, headers=desk.operator)
               for cid, params in (("nope", {}), ("jjj-lab", {"to": "1999"}), ("jjj-lab", {"to": old.version}))]
    assert [(r.status_code, r.json()["field"]) for r in refused] == [(404, "catalogue_id"), (404, "to"), (422, "from")]
    assert desk.client.get("/api/v1/catalogues/jjj-lab/diff", headers=desk.who.his("bj-chaoyang-001")
                           ).status_code == 403


def _published(book) -> tuple[list[list[str]], list[str]]:  # type: ignore[no-untyped-def]
    """A published list as a commission writes it (a title row, a section heading, names with full-width
    brackets, one item twice and one name no item has) and the unified codes its good rows name."""
    items = [i for i in book.items.values() if i.is_lab][:4]
    full_width = items[1].name_zh.replace("(", "（").replace(")", "）")
    rows = [["某省检查检验结果互认项目目录（2026年版）"], ["序号", "项目名称", "互认时限", "备注"],
            ["一、临床化学"], ["1", items[0].name_zh, "7天", ""], ["2", full_width, "1个月", "空腹"],
            ["3", items[2].name_zh, "", ""], ["4", "不存在的检验项目", "30天", ""], ["5", items[0].name_zh, "7天", ""],
            ["6", items[3].name_zh, "三天", ""]]
    return rows, [items[0].code, items[1].code, items[2].code]


def _xlsx(rows: list[list[str]]) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    for row in rows:
        book.active.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_a_dry_run_reports_every_row_not_matched_for_csv_and_excel(desk: Desk) -> None:
    rows, codes = _published(desk.context.book)
    text = "\n".join(",".join(r) for r in rows) + "\n"
    before = sorted(p.name for p in (desk.codes / "catalogues").iterdir())
    params = {"tier": "province", "scope": "330000", "version": "2026", "effective_from": "2026-01-01",
              "dry_run": "true"}
    answers = [desk.client.post("/api/v1/catalogues/import", params=params, headers=desk.operator, files={
        "file": (name, content, media)}) for name, content, media in (
            ("list.csv", text.encode("gb18030"), "text/csv"),  # GBK, as commissions publish
            ("list.xlsx", _xlsx(rows), "application/octet-stream"))]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["written"] is False and body["items"] == len(codes) and body["id"] == "province-330000"
        assert [(u["line"], u["reason"].split(":")[0].split(" ")[0]) for u in body["unmatched"]] == [
            (1, "before"), (3, "section"), (7, "no"), (8, "duplicate"), (9, "cannot")]
        assert [line.split("code: ")[1].split(",")[0] for line in body["yaml"].splitlines() if "code: " in line] \
            == codes
    assert answers[0].json()["unmatched"] == answers[1].json()["unmatched"]
    assert sorted(p.name for p in (desk.codes / "catalogues").iterdir()) == before
    unmatched = answers[0].json()["unmatched"]
    table = desk.client.post("/api/v1/catalogues/import", params={**params, "format": "csv"}, headers=desk.operator,
                             files={"file": ("list.csv", text.encode("utf-8"), "text/csv")})
    assert table.status_code == 200 and table.headers["content-type"] == "text/csv; charset=utf-8"
    assert table.headers["content-disposition"] == 'attachment; filename="province-330000-2026-unmatched.csv"'
    reader = csv.reader(io.StringIO(table.content.decode("utf-8-sig")))
    assert next(reader) == ["line", "name", "reason"]
    assert list(reader) == [[str(u["line"]), u["name"], u["reason"]] for u in unmatched]
    excel = desk.client.post("/api/v1/catalogues/import", params={**params, "format": "xlsx"}, headers=desk.operator,
                             files={"file": ("list.xlsx", _xlsx(rows), "application/octet-stream")})
    assert excel.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    values = list(load_workbook(io.BytesIO(excel.content)).active.values)
    assert values == [("line", "name", "reason")] + [(u["line"], u["name"], u["reason"]) for u in unmatched]
    assert sorted(p.name for p in (desk.codes / "catalogues").iterdir()) == before  # a download writes nothing


def _text(value: object) -> str:
    """A JSON value as the CSV writes it (no formula-like text in these rows)."""
    return "" if value is None else ("true" if value else "false") if isinstance(value, bool) else str(value)


def test_catalogue_versions_as_csv_and_excel_with_the_rows_of_the_json_answer(desk: Desk) -> None:
    columns = ["id", "name_zh", "tier", "scope", "authority", "version", "effective_from", "effective_to",
               "in_force", "all_items", "item_count"]
    at = {"at": "2026-06-01T00:00:00+08:00"}
    listed = desk.client.get("/api/v1/catalogues", params=at, headers=desk.operator).json()["catalogues"]
    assert len(listed) == len(desk.context.book.catalogues) and {c["in_force"] for c in listed} == {True, False}
    as_csv = desk.client.get("/api/v1/catalogues", params={**at, "format": "csv"}, headers=desk.operator)
    assert as_csv.status_code == 200 and as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert as_csv.headers["content-disposition"] == 'attachment; filename="catalogues.csv"'
    assert as_csv.content.startswith(b"\xef\xbb\xbf")
    reader = csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig")))
    assert next(reader) == columns
    assert list(reader) == [[_text(c[k]) for k in columns] for c in listed]
    as_xlsx = desk.client.get("/api/v1/catalogues", params={**at, "tier": "alliance"},
                              headers={**desk.operator, "Accept": "application/vnd.openxmlformats-officedocument."
                                                                  "spreadsheetml.sheet"})
    values = list(load_workbook(io.BytesIO(as_xlsx.content)).active.values)
    alliances = [c for c in listed if c["tier"] == "alliance"]
    assert alliances and values == [tuple(columns)] + [tuple(c[k] for k in columns) for c in alliances]


def test_an_import_writes_the_new_version_only_when_every_row_matched_or_allowed(desk: Desk) -> None:
    rows, codes = _published(desk.context.book)
    text = ("\n".join(",".join(r) for r in rows) + "\n").encode("utf-8")
    params = {"tier": "province", "scope": "330000", "id": "zj-test", "version": "2026",
              "effective_from": "2026-01-01", "authority": "浙江省卫生健康委员会"}

    def post(**more: str):  # type: ignore[no-untyped-def]
        return desk.client.post("/api/v1/catalogues/import", params={**params, **more}, headers=desk.operator,
                                files={"file": ("list.csv", text, "text/csv")})

    refused = post()
    assert refused.status_code == 422 and "5 row(s) did not match" in refused.json()["error"]
    assert not (desk.codes / "catalogues" / "zj-test-2026.yaml").exists()
    written = post(allow_unmatched="true")
    assert written.status_code == 200, written.text
    assert written.json()["file"] == "catalogues/zj-test-2026.yaml" and written.json()["written"] is True
    versions = desk.context.book.catalogue_versions("zj-test")
    assert [(c.version, sorted(c.items)) for c in versions] == [("2026", sorted(codes))]
    shown = desk.client.get("/api/v1/catalogues/zj-test", headers=desk.operator).json()
    assert shown["authority"] == "浙江省卫生健康委员会"
    again = post(allow_unmatched="true")  # the same version again: refused, nothing changed
    assert again.status_code in (409, 422) and desk.context.book.catalogue_versions("zj-test") == versions
    overlapping = post(allow_unmatched="true", version="2026b")  # open-ended 2026 is still in force
    assert overlapping.status_code == 422 and "overlaps" in overlapping.json()["error"]
    assert not (desk.codes / "catalogues" / "zj-test-2026b.yaml").exists()
    with desk.context.database.connect() as conn:
        assert list(conn.execute(select(AuditRecord.action).where(AuditRecord.action == "catalogue.import"))
                    .scalars()) == ["catalogue.import"]
    bad = desk.client.post("/api/v1/catalogues/import", params=params, headers=desk.operator,
                           files={"file": ("list.xlsx", b"PK\x03\x04 not a workbook", "application/octet-stream")})
    assert (bad.status_code, bad.json()["field"]) == (422, "file")
    assert desk.client.post("/api/v1/catalogues/import", params=params, headers=desk.who.auditor(),
                            files={"file": ("list.csv", text, "text/csv")}).status_code == 403
