"""The web pages' texts all come from the message catalogues, in both languages; the pages, assets and viewer
templates are served with the headers the pages rely on."""
from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from codes.model import CATEGORIES, GRADES, TIERS
from exchange.auth.roles import purposes, roles
from exchange.recognize import Status
from exchange.web import HERE, LANGUAGES, PAGES, mount_pages
from schemas.statuses import STATUSES

CATALOGUES = {lang: json.loads((HERE / "messages" / f"{lang}.json").read_text("utf-8")) for lang in LANGUAGES}
SCRIPTS = sorted((HERE / "assets" / "js").glob("*.js"))
HTML = sorted(p for p in (HERE / "pages").glob("*.html") if p.name != "docs.html")  # docs: Swagger UI, English
CJK = re.compile(r"[\u3000-\u9fff\uff00-\uffef]")


def _used_keys() -> set[str]:
    keys: set[str] = set()
    for path in HTML:
        keys |= set(re.findall(r'data-i18n(?:-[a-z-]+)?="([^"]+)"', path.read_text("utf-8")))
    for path in SCRIPTS:
        text = path.read_text("utf-8")
        keys |= set(re.findall(r'\bt\(\s*"([^"]+)"', text))
        keys |= set(re.findall(r'"(col\.[a-z_]+)"', text))
    return keys


def test_both_catalogues_have_the_same_keys_and_no_empty_text() -> None:
    zh, en = CATALOGUES["zh-CN"], CATALOGUES["en"]
    assert sorted(zh) == sorted(en)
    assert not [k for k in zh if not zh[k].strip() or not en[k].strip()]
    assert [k for k in en if CJK.search(en[k]) and k != "action.other_language"] == []


def test_every_text_a_page_or_script_names_is_in_the_catalogues() -> None:
    missing = sorted(_used_keys() - set(CATALOGUES["zh-CN"]))
    assert missing == []


def test_statuses_tiers_categories_roles_and_purposes_have_names_in_both_languages() -> None:
    wanted = ([f"status.{s.value}" for s in Status] + [f"tier.{t}" for t in TIERS]
              + [f"category.{c}" for c in CATEGORIES] + [f"role.{r}" for r in roles()]
              + [f"purpose.{p}" for p in purposes()] + [f"result_status.{s}" for s in STATUSES]
              + [f"grade.{g}" for g in GRADES])
    assert [k for k in wanted if k not in CATALOGUES["zh-CN"]] == []


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


@pytest.mark.parametrize("path", HTML, ids=lambda p: p.name)
def test_no_page_holds_text_of_its_own(path: Path) -> None:
    parser = _Text()
    parser.feed(path.read_text("utf-8"))
    assert parser.text == []
    assert "<script>" not in path.read_text("utf-8") and "style=" not in path.read_text("utf-8")  # the CSP refuses


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_no_script_holds_chinese_text(path: Path) -> None:
    lines = [line for line in path.read_text("utf-8").splitlines() if CJK.search(line)]
    assert lines == []


def test_the_shipped_echarts_is_the_one_its_note_names() -> None:
    folder = HERE / "assets" / "vendor" / "echarts"
    note = (folder / "VERSION.md").read_text("utf-8")
    digest = hashlib.sha256((folder / "echarts.min.js").read_bytes()).hexdigest()
    assert f"`{digest}`" in note
    assert "Apache License" in (folder / "LICENSE").read_text("utf-8") and (folder / "NOTICE").exists()


def _app() -> TestClient:
    from exchange.api.app import _Api

    app: FastAPI = _Api()
    mount_pages(app)
    return TestClient(app)


def test_pages_assets_and_catalogues_are_served_with_the_security_headers() -> None:
    client = _app()
    home = client.get("/ui/", follow_redirects=False)
    assert home.status_code == 303 and home.headers["location"] == "/ui/login"
    for name in PAGES:
        page = client.get(f"/ui/{name}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
    script = client.get("/ui/assets/js/common.js")
    assert script.status_code == 200 and script.headers["cache-control"] == "no-cache" and script.headers["etag"]
    assert client.get("/ui/assets/js/common.js", headers={"if-none-match": script.headers["etag"]}).status_code == 304
    assert client.get("/ui/messages/zh-CN.json").json()["status.recognizable"] == "可互认"
    assert client.get("/ui/assets/../../api/app.py").status_code == 404
    assert client.get("/ui/nothing").status_code == 404


def test_viewer_templates_come_from_the_file_named_by_hrx_viewers(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from exchange.web import viewers

    viewers.cache_clear()
    assert "{study_instance_uid}" in _app().get("/ui/viewers.json").json()["viewers"]["default"]
    own = tmp_path / "viewers.yaml"
    own.write_text('viewers:\n  bj-chaoyang-001: "http://{host}:8042/stone-webviewer/index.html?study={study_instance_uid}"\n',
                   "utf-8")
    monkeypatch.setenv("HRX_VIEWERS", str(own))
    viewers.cache_clear()
    try:
        assert _app().get("/ui/viewers.json").json() == {"viewers": {
            "bj-chaoyang-001": "http://{host}:8042/stone-webviewer/index.html?study={study_instance_uid}"}}
        own.write_text("viewers: nope\n", "utf-8")
        viewers.cache_clear()
        with pytest.raises(ValueError, match="expected a mapping"):
            viewers()
    finally:
        viewers.cache_clear()
