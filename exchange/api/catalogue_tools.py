"""Catalogue versions for the platform operator: what changed between two versions, and importing a published
list (``hrx catalogue diff`` and ``hrx catalogue import`` over HTTP, with the same rules: codes.tools,
codes.importer)."""
from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from pydantic import BaseModel, Field

from codes.importer import CatalogueRefused, add_catalogue_version, import_published
from codes.model import TIERS
from codes.sources import SourceError
from codes.tools import diff, diff_as_dict
from exchange import audit
from exchange.api.access import require
from exchange.api.app import ApiError, context_of
from exchange.api.errors import AUTHENTICATED, refusals
from exchange.api.fields import ANSWER, Tier
from exchange.api.tables import TABLE_RESPONSES, Table, TableFormat, answer_table
from exchange.auth.principal import Principal
from exchange.recognize import RecognitionMemo

router = APIRouter(prefix="/api/v1", tags=["codes"], responses=AUTHENTICATED)

OPERATOR = require("operator", purpose="quality")
#: The largest published list accepted (the national lists are a few hundred rows).
MAX_UPLOAD = 5 << 20


class ItemRef(BaseModel):
    model_config = ANSWER

    code: str
    name_zh: str | None


class HeaderChange(BaseModel):
    model_config = ANSWER

    field: str
    old: Any
    new: Any


class ItemChange(BaseModel):
    model_config = ANSWER

    code: str
    name_zh: str | None
    field: str = Field(description="`valid_days`, `qc_level` or `note`")
    old: Any
    new: Any


class CatalogueDiff(BaseModel):
    model_config = ANSWER

    id: str
    from_: str = Field(alias="from", description="the older version")
    to: str
    header: list[HeaderChange] = Field(description="changed header fields (validity period, QC level, ...)")
    added: list[ItemRef]
    removed: list[ItemRef]
    changed: list[ItemChange]


@router.get("/catalogues/{catalogue_id}/diff", summary="Items added, removed and changed between two versions",
            response_model=CatalogueDiff, responses={**refusals(404, 422), **TABLE_RESPONSES})
def catalogue_diff(catalogue_id: str, request: Request,
                   version_from: str | None = Query(None, alias="from", description="default: the version "
                                                    "before `to`"),
                   version_to: str | None = Query(None, alias="to", description="default: the newest version"),
                   format: TableFormat | None = None,  # noqa: A002
                   _: Principal = Depends(OPERATOR)) -> Any:  # noqa: B008
    """As ``hrx catalogue diff``. As a table (CSV, Excel): one row per `added`, `removed` or `changed` item
    (a changed item once per field)."""
    book = context_of(request).book
    versions = book.catalogue_versions(catalogue_id)
    if not versions:
        raise ApiError("catalogue_id", f"unknown catalogue {catalogue_id!r}", 404)
    labels = [c.version for c in versions]
    for name, label in (("to", version_to), ("from", version_from)):
        if label is not None and label not in labels:
            raise ApiError(name, f"catalogue {catalogue_id!r} has no version {label!r} (versions: "
                                 f"{', '.join(labels)})", 404)
    new = versions[labels.index(version_to)] if version_to is not None else versions[-1]
    if version_from is not None:
        old = versions[labels.index(version_from)]
    elif versions.index(new) > 0:
        old = versions[versions.index(new) - 1]
    else:
        raise ApiError("from", f"version {new.version} is the first of {catalogue_id!r}: name `from`")
    found = diff_as_dict(diff(Path(old.source), Path(new.source), reference=book.root), book)
    if found["problems"]:  # the files loaded with the book: only a file changed under the running exchange
        raise ApiError(None, "; ".join(found["problems"][:5]), 409)
    body = {"id": catalogue_id, "from": old.version, "to": new.version, "header": found["header"],
            "added": found["added"], "removed": found["removed"], "changed": found["changed"]}
    rows = ([{"change": "added", **i} for i in found["added"]] + [{"change": "removed", **i} for i in found["removed"]]
            + [{"change": "changed", **i} for i in found["changed"]])
    table = Table(f"{catalogue_id}-{old.version}-{new.version}", ["change", "code", "name_zh", "field", "old", "new"],
                  rows)
    return answer_table(request, format, table, lambda: body)


class UnmatchedRow(BaseModel):
    model_config = ANSWER

    line: int = Field(description="line (CSV) or row (Excel) of the uploaded list; 0: the file as a whole")
    name: str
    reason: str


class CatalogueImport(BaseModel):
    model_config = ANSWER

    dry_run: bool
    written: bool = Field(description="the version was added to the code directory and is in use")
    file: str | None = Field(description="`catalogues/<file>` when written")
    id: str
    version: str
    tier: Tier
    scope: str
    items: int = Field(description="rows that became catalogue items")
    unmatched: list[UnmatchedRow] = Field(description="every row not imported, with why")
    yaml: str = Field(description="the catalogue version as written (or as it would be)")
    codes_version: str = Field(description="digest of the code data in use after the import")


@router.post("/catalogues/import", summary="Import a published list (CSV or Excel): every row not matched, and "
             "unless a dry run, the new catalogue version", response_model=CatalogueImport,
             responses={**refusals(409, 413, 422), **TABLE_RESPONSES})
def import_catalogue(request: Request, file: UploadFile = File(description="the published list: CSV (UTF-8 or "  # noqa: B008
                                                               "GBK) or .xlsx"),
                     tier: str = Query(..., description=f"one of {', '.join(TIERS)}"),
                     scope: str = Query(..., max_length=64, description="alliance id, city/province code, region "
                                        "id or `national`"),
                     catalogue_id: str | None = Query(None, alias="id", max_length=64,
                                                      description="default: `<tier>-<scope>`"),
                     authority: str = Query("", max_length=128), version: str | None = Query(None, max_length=32),
                     effective_from: date | None = Query(None, description="default: today (Beijing)"),
                     valid_days: int = Query(30, ge=1, le=3650, description="validity when the list gives none"),
                     name_zh: str | None = Query(None, max_length=128),
                     dry_run: bool = Query(False, description="only report; write nothing"),
                     allow_unmatched: bool = Query(False, description="write even though some rows did not match "
                                                   "(they are left out)"),
                     format: TableFormat | None = Query(None, description="`csv`/`xlsx`: the unmatched rows as a "  # noqa: A002
                                                        "table"),
                     who: Principal = Depends(OPERATOR)) -> Any:  # noqa: B008
    """As ``hrx catalogue import``: names are matched exactly, normalised, through aliases.csv, without the
    parenthesised part, then by abbreviation; each row not imported is listed with why. Without ``dry_run``
    the version is checked as ``hrx catalogue validate`` checks a file (a period overlapping another version of
    the id is refused: close the older version first) and written into the exchange's code directory, which is
    loaded again. Refused (nothing written): 422 with every unmatched row unless ``allow_unmatched``, 409 for
    the shipped demo data or a version already there.

    With ``format=csv|xlsx`` (or the Accept header) the same request answers the unmatched rows as a file
    (``line``, ``name``, ``reason``) instead of the JSON report. Why the same POST and no separate download route:
    the rows are the outcome of matching one uploaded file, which the exchange does not keep (the list is staged
    in a temporary directory and dropped); a GET would need the upload stored under an id, with its lifetime and
    access to manage. Sent again with ``dry_run=true`` and a format, the upload is matched again by the same
    rules and nothing is written, so the file equals the JSON answer's ``unmatched``."""
    context = context_of(request)
    if tier not in TIERS:
        raise ApiError("tier", f"must be one of {', '.join(TIERS)}")
    data = file.file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise ApiError("file", f"larger than {MAX_UPLOAD >> 20} MiB", 413)
    suffix = ".xlsx" if (file.filename or "").lower().endswith(".xlsx") or data[:2] == b"PK" else ".csv"
    with tempfile.TemporaryDirectory() as staging:
        path = Path(staging) / f"list{suffix}"
        path.write_bytes(data)
        try:
            result = import_published(path, tier, scope, context.book, catalogue_id=catalogue_id,
                                      authority=authority, version=version, effective_from=effective_from,
                                      default_valid_days=valid_days, name_zh=name_zh)
        except SourceError as exc:
            raise ApiError("file", exc.message) from None
    unmatched = [{"line": r.line, "name": r.name, "reason": r.reason} for r in result.unmatched]
    made = yaml.safe_load(result.yaml_text)
    body = {"dry_run": dry_run, "written": False, "file": None, "id": str(made["id"]),
            "version": str(made["version"]), "tier": tier, "scope": scope, "items": len(made["items"] or ()),
            "unmatched": unmatched, "yaml": result.yaml_text, "codes_version": context.book.version}
    table = Table(f"{body['id']}-{body['version']}-unmatched", ["line", "name", "reason"], unmatched)
    if dry_run:
        return answer_table(request, format, table, lambda: body)
    if unmatched and not allow_unmatched:
        raise ApiError("file", f"{len(unmatched)} row(s) did not match (first: line {unmatched[0]['line']}: "
                               f"{unmatched[0]['name']}: {unmatched[0]['reason']}); fix the list or aliases.csv, "
                               "or import with allow_unmatched=true")
    with context.codes_lock:
        try:
            target, book = add_catalogue_version(context.book, result.yaml_text)
        except CatalogueRefused as exc:
            detail = f": {'; '.join(exc.problems[:5])}" if exc.problems else ""
            raise ApiError("file" if exc.problems else None, exc.message + detail,
                           409 if exc.conflict else 422) from None
        context.book = book
        context.recognition_memo = RecognitionMemo()  # the catalogues in force may have changed
    with context.database.begin() as conn:
        audit.record(conn, who.actor("quality"), "catalogue.import", None, {
            "id": body["id"], "version": body["version"], "file": target.name, "items": body["items"],
            "unmatched": len(unmatched)})
    body.update(written=True, file=f"catalogues/{target.name}", codes_version=book.version)
    return answer_table(request, format, table, lambda: body)
