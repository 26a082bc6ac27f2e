"""Application factory and the shared context every route uses."""
from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine as Database
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from adapters.pipeline import ResultPipeline
from codes import CodeBook
from exchange.config import FHIR_MAX_BYTES
from exchange import collector, outbox
from exchange.api.security_headers import SecurityHeaders
from adapters.pseudonymize import Pseudonymizer
from exchange.auth.patient_codes import CodeSender
from exchange.auth.throttle import FailureThrottle
from exchange.jobs import Jobs
from exchange.recognize import RecognitionMemo
from adapters.publish import Publisher


class ApiError(Exception):
    """A refused request: answered with ``{"error": "<field>: <message>", "field": …}`` and a 4xx status."""

    def __init__(self, field: str | None, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


#: The label the launch-token key is derived under (Context.launch_key).
_LAUNCH_KEY_LABEL = b"hrx launch-token key v1"


@dataclass
class Context:
    """What the routes share: the code book, the store, the pseudonymizer and the publisher."""

    book: CodeBook
    database: Database
    pseudonymizer: Pseudonymizer
    publisher: Publisher
    bootstrap: str
    engine_group: str
    fhir_max_bytes: int = FHIR_MAX_BYTES  # POST /fhir refuses larger bodies (HRX_FHIR_MAX_BYTES)
    fhir_validate: bool = False  # /fhir answers validated with the R4B models before sending (HRX_FHIR_VALIDATE)
    #: Browser origins allowed to call the API across origins (HRX_CORS_ORIGINS); none by default.
    cors_origins: tuple[str, ...] = ()
    recognition_memo: RecognitionMemo = field(default_factory=RecognitionMemo)
    code_sender: CodeSender | None = None  # delivers patients' one-time login codes (exchange.auth.patient_codes)
    login_failures: FailureThrottle = field(default_factory=FailureThrottle)  # per source address
    jobs: Jobs = field(default_factory=Jobs)  # background work started by a request (the re-map)
    #: Held while the code directory is written and the book replaced (one writer per process).
    codes_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Where the web UI answers (HRX_UI_BASE_URL), for the links of CDS cards; None: ``/ui`` beside the API.
    ui_base_url: str | None = None
    #: Origins that may frame the web pages (HRX_UI_FRAME_ANCESTORS): the HIS embedding ``/ui/``.
    ui_frame_ancestors: tuple[str, ...] = ()
    #: The language of CDS services and cards when Accept-Language names neither zh nor en (HRX_CDS_LANGUAGE).
    cds_language: str = "zh"

    @property
    def launch_key(self) -> bytes:
        """Signs the HIS's launch tokens (exchange.api.launch). Derived from the pseudonym key under a label of its
        own (HMAC-SHA256 as a key-derivation function, so neither key tells anything of the other): every API
        replica redeems a token any of them issued, and no second secret is deployed."""
        return hmac.new(self.pseudonymizer.key, _LAUNCH_KEY_LABEL, hashlib.sha256).digest()

    def pipeline(self) -> ResultPipeline:
        return ResultPipeline(self.book, self.pseudonymizer, self.publisher)


class _Api(FastAPI):
    """FastAPI with :class:`SecurityHeaders` as its outermost layer: outside Starlette's ServerErrorMiddleware,
    so that the 500 of an unhandled error carries the headers too (``add_middleware`` would put them inside)."""

    def build_middleware_stack(self) -> ASGIApp:
        context = getattr(self.state, "context", None)
        return SecurityHeaders(super().build_middleware_stack(),
                               ui_frame_ancestors=context.ui_frame_ancestors if context is not None else ())


def create_app(context: Context) -> FastAPI:

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Decisions and feedback are stored first; this relay publishes what the broker missed.
        stop = threading.Event()
        relay = threading.Thread(target=outbox.run_relay, args=(context.database, context.publisher, stop),
                                 name="outbox", daemon=True)
        relay.start()
        with collector.tuned():  # the code book out of the collector's view; no collections per check
            yield
        stop.set()

    # FastAPI's /docs and /redoc load Swagger UI and ReDoc from a CDN: off; exchange.web serves /docs from the package.
    app = _Api(title="HR Exchange", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
               description="检查检验结果互认 — mutual recognition of lab and imaging results between hospitals.")
    app.state.context = context
    from exchange.api.metrics import RequestMetrics  # imports this module's routes' dependencies
    from exchange.api.request_ids import RequestIds

    app.add_middleware(RequestMetrics)
    app.add_middleware(RequestIds)  # outside the metrics: the id is known to everything inside
    if context.cors_origins:  # exactly the configured origins; without them no answer allows another origin
        app.add_middleware(CORSMiddleware, allow_origins=list(context.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization"])

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the field first, so an integrator sees at once what to fix.
        problems = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
                    for e in exc.errors()]
        first = problems[0] if problems else {"field": None, "message": "invalid request"}
        return JSONResponse(status_code=422, content={"error": f"{first['field']}: {first['message']}",
                                                      "problems": problems})

    @app.exception_handler(HTTPException)
    async def _unparsed(request: Request, exc: HTTPException) -> Response:
        # A JSON body that is not even UTF-8 gets a bare 400 of FastAPI's own shape; it is a request that does
        # not parse like any other invalid JSON, refused as those are (422, the shape every route declares).
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            problem = {"field": "body", "message": "JSON decode error: the body is not UTF-8"}
            return JSONResponse(status_code=422, content={"error": f"body: {problem['message']}",
                                                          "problems": [problem]})
        return await http_exception_handler(request, exc)

    @app.exception_handler(ApiError)
    async def _refused(request: Request, exc: ApiError) -> JSONResponse:
        error = f"{exc.field}: {exc.message}" if exc.field else exc.message
        if request.url.path.startswith("/fhir"):  # a FHIR client reads an OperationOutcome
            issue = {401: "login", 403: "forbidden", 503: "transient"}.get(exc.status, "invalid")
            return JSONResponse(status_code=exc.status, media_type="application/fhir+json", content={
                "resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": issue,
                                                              "diagnostics": error}]})
        return JSONResponse(status_code=exc.status, content={"error": error, "field": exc.field})

    for router in api_routers():
        app.include_router(router)
    from exchange.web import mount_pages  # the web pages under /ui/ (exchange/web)

    mount_pages(app)
    return app


def api_routers() -> list[APIRouter]:
    """Every router of the API, in the order they are included (the access test walks the same list)."""
    from exchange.api import (auth, catalogue_tools, cds_hooks, codes, decisions, encounters, feedback, fhir,
                              fhir_check, fhir_search, health, launch, me, metrics, oversight, patients, quality,
                              recognition)

    return [module.router for module in (fhir, fhir_search, fhir_check, recognition, health, metrics, codes,
                                         catalogue_tools, auth, encounters, decisions, feedback, patients, me, oversight,
                                         quality, cds_hooks, launch)]


def context_of(request: Request) -> Context:
    return request.app.state.context
