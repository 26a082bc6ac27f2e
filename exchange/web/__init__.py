"""The exchange's own web pages, served under ``/ui/`` by the API process (``hrx up``, ``hrx serve``).

Plain HTML and small vanilla JavaScript modules that call the JSON API with the web session cookie
(``POST /api/v1/auth/login`` or a launch from the HIS, exchange.api.launch); no build step at run time. Every
asset ships in this package — scripts, styles, the chart library (ECharts, ``assets/vendor/echarts``) and the
message catalogues (``messages/<lang>.json``, zh-CN first) — so the pages work with no internet, as on a hospital
intranet. The pages and assets hold no patient data and are open; every datum they show comes from the API,
which authenticates, authorises and audits each read as for any other caller.

The "view images" link of an imaging result is built from the issuer's retrieval pointer with a URL template per
PACS (``viewers.yaml`` here, or the file named by ``HRX_VIEWERS``), served at ``/ui/viewers.json``.
"""
from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from exchange.api.access import PUBLIC

HERE = Path(__file__).parent
#: The pages, by the name in their address: /ui/<name>, and the file each is (the HIS's launch link opens the
#: clinician's page, which redeems the token itself: one page load less before the view is ready).
PAGES = {"login": "login", "launch": "clinician", "clinician": "clinician", "auditor": "auditor",
         "patient": "patient", "operator": "operator"}
LANGUAGES = ("zh-CN", "en")

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("")
@router.get("/")
def home(_: None = Depends(PUBLIC)) -> RedirectResponse:  # noqa: B008
    return RedirectResponse("/ui/login", status_code=303)


def _page(name: str, file: str) -> Any:
    def serve(_: None = Depends(PUBLIC)) -> FileResponse:  # noqa: B008
        return FileResponse(HERE / "pages" / f"{file}.html", media_type="text/html; charset=utf-8")

    serve.__name__ = f"page_{name}"
    return serve


for _name, _file in PAGES.items():
    router.add_api_route(f"/{_name}", _page(_name, _file), methods=["GET"])


@router.get("/results/{issuer}/{result_id}")
def result_page(issuer: str, result_id: str, _: None = Depends(PUBLIC)) -> FileResponse:  # noqa: B008
    """The clinician's page opened on one result (the links of CDS Hooks cards, exchange.cds.cards): it shows the
    result's detail within the patient the clinician's session is on."""
    return FileResponse(HERE / "pages" / "clinician.html", media_type="text/html; charset=utf-8")


@cache
def viewers() -> dict[str, Any]:
    """The image-viewer URL templates: ``default`` and one per issuer id (read once)."""
    path = Path(os.environ.get("HRX_VIEWERS") or HERE / "viewers.yaml")
    data = yaml.safe_load(path.read_text("utf-8")) or {}
    if not isinstance(data.get("viewers"), dict):
        raise ValueError(f"{path}: expected a mapping `viewers:` of issuer id (or default) to a URL template")
    return {"viewers": {str(k): str(v) for k, v in data["viewers"].items()}}


@router.get("/viewers.json")
def viewer_templates(_: None = Depends(PUBLIC)) -> JSONResponse:  # noqa: B008
    return JSONResponse(viewers())


def api_reference(_: None = Depends(PUBLIC)) -> FileResponse:  # noqa: B008
    """Swagger UI on /openapi.json, from the copy in assets/vendor/swagger-ui (no CDN)."""
    return FileResponse(HERE / "pages" / "docs.html", media_type="text/html; charset=utf-8")


def mount_pages(app: FastAPI) -> None:
    """Serve the pages, their assets and the message catalogues under ``/ui/``, and the API reference at
    ``/docs``."""
    app.include_router(router)
    app.add_api_route("/docs", api_reference, methods=["GET"], include_in_schema=False)
    app.mount("/ui/assets", StaticFiles(directory=HERE / "assets"), name="ui-assets")
    app.mount("/ui/messages", StaticFiles(directory=HERE / "messages"), name="ui-messages")
