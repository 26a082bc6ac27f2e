"""Read-only views of the code book: catalogues, unified items, institutions."""
from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime

from exchange.api.app import ApiError, context_of

router = APIRouter(prefix="/api/v1", tags=["codes"])


def _plain(value: Any) -> Any:
    """Dataclass fields as JSON-friendly values (dates as ISO text, Decimals as numbers)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, frozenset, set)):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if type(value).__name__ == "Decimal":
        return float(value)
    return value


def _catalogue_summary(catalogue: Any, at: datetime) -> dict[str, Any]:
    return {"id": catalogue.id, "name_zh": catalogue.name_zh, "tier": catalogue.tier, "scope": catalogue.scope,
            "authority": catalogue.authority, "version": catalogue.version,
            "effective_from": catalogue.effective_from.isoformat(),
            "effective_to": catalogue.effective_to.isoformat() if catalogue.effective_to else None,
            "in_force": catalogue.in_force(at), "all_items": catalogue.all_items, "item_count": len(catalogue.items)}


@router.get("/catalogues", summary="Every catalogue version, with whether it is in force at `at`")
def catalogues(request: Request, tier: str | None = None, at: AwareDatetime | None = None) -> dict[str, Any]:
    book = context_of(request).book
    moment = at or datetime.now(UTC)
    rows = [_catalogue_summary(c, moment) for c in book.catalogues if tier is None or c.tier == tier]
    return {"at": moment.isoformat(), "codes_version": book.version, "catalogues": rows}


@router.get("/catalogues/{catalogue_id}", summary="One catalogue with its items (the version in force at `at`)")
def catalogue(catalogue_id: str, request: Request, at: AwareDatetime | None = None,
              version: str | None = Query(None, description="a specific version instead of the one in force")) -> dict[str, Any]:
    book = context_of(request).book
    moment = at or datetime.now(UTC)
    versions = [c for c in book.catalogues if c.id == catalogue_id]
    if not versions:
        raise ApiError("catalogue_id", f"unknown catalogue {catalogue_id!r}", 404)
    if version is not None:
        chosen = next((c for c in versions if c.version == version), None)
        if chosen is None:
            raise ApiError("version", f"catalogue {catalogue_id!r} has no version {version!r}", 404)
    else:
        chosen = next((c for c in versions if c.in_force(moment)), None) or versions[-1]
    body = _catalogue_summary(chosen, moment)
    body["versions"] = [c.version for c in versions]
    body["grade_overlays"] = _plain([asdict(o) for o in chosen.grade_overlays])
    body["items"] = [{"code": e.code, "name_zh": book.items[e.code].name_zh, "valid_days": e.valid_days,
                      "qc_level": e.qc_level, "note": e.note} for e in chosen.items.values()]
    return body


@router.get("/items/{code}", summary="A unified item, with the catalogues in force that list it")
def item(code: str, request: Request, at: AwareDatetime | None = None) -> dict[str, Any]:
    book = context_of(request).book
    found = book.items.get(code)
    if found is None:
        raise ApiError("code", f"unknown unified item code {code!r}", 404)
    moment = at or datetime.now(UTC)
    body = _plain(asdict(found))
    body["catalogues"] = [{"id": c.id, "tier": c.tier, "scope": c.scope, "version": c.version,
                           "valid_days": c.items[code].valid_days}
                          for c in book.catalogues_in_force(moment) if code in c.items]
    return body


@router.get("/institutions/{institution_id}", summary="An institution: grade, division, alliances, QC certificates")
def institution(institution_id: str, request: Request) -> dict[str, Any]:
    book = context_of(request).book
    found = book.institutions.get(institution_id)
    if found is None:
        raise ApiError("institution_id", f"unknown institution {institution_id!r}", 404)
    body = _plain(asdict(found))
    body["province"], body["city"] = found.province, found.city
    body["regions"] = list(book.region_ids(found))
    body["mapping_version"] = book.mapping_version(found.id)
    return body


@router.get("/unmapped-codes", summary="Codes stored without a unified item, grouped by why (the unmapped queue)")
def unmapped(request: Request, institution: str | None = None) -> dict[str, Any]:
    """The queue ``hrx codes unmapped`` prints: per reason (``unknown_code``, ``unit_not_convertible``,
    ``ambiguous``; null for results stored before reasons were recorded) its heading in Chinese and English and
    the codes with how many current results carry them. No patient data: no audit record."""
    from codes.issues import REASONS, reason_title
    from exchange.store import unmapped_codes

    context = context_of(request)
    with context.database.connect() as conn:
        rows = unmapped_codes(conn, institution)
    groups = []
    for reason in [*REASONS, None]:
        codes = [{"issuer": r.issuer, "local_code": r.local_code, "local_system": r.local_system,
                  "results": r.results} for r in rows if r.reason == reason]
        if codes:
            zh, en = reason_title(reason)
            groups.append({"reason": reason, "zh": zh, "en": en, "codes": codes})
    return {"codes_version": context.book.version, "groups": groups}
