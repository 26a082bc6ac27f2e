"""Read-only views of the code book: catalogues, unified items, institutions."""
from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, Field

from codes.model import CATEGORIES, GRADES, KINDS
from exchange.api.access import ANY_ROLE, require, same_institution, within_scope
from exchange.api.app import ApiError, context_of
from exchange.api.errors import AUTHENTICATED, refusals
from exchange.api.fields import ANSWER, IsoDate, OneOf, QcLevel, Tier, Timestamp
from exchange.api.tables import TABLE_RESPONSES, Table, TableFormat, answer_table
from exchange.auth.principal import Principal

router = APIRouter(prefix="/api/v1", tags=["codes"], responses=AUTHENTICATED)


class CatalogueSummary(BaseModel):
    """One version of a recognition catalogue (互认目录)."""

    model_config = ANSWER

    id: str
    name_zh: str | None
    tier: Tier
    scope: str = Field(description="alliance id, division code, region id or `national`")
    authority: str
    version: str
    effective_from: Timestamp
    effective_to: Timestamp | None = Field(description="exclusive; null: open")
    in_force: bool = Field(description="in force at the moment asked about")
    all_items: bool
    item_count: int


class CatalogueList(BaseModel):
    model_config = ANSWER

    at: Timestamp
    codes_version: str = Field(description="digest of the code data in use")
    catalogues: list[CatalogueSummary]


class GradeOverlayView(BaseModel):
    model_config = ANSWER

    requester_grades: list[Annotated[str, OneOf(GRADES)]]
    issuer_grades: list[Annotated[str, OneOf(GRADES)]]
    note: str | None


class CatalogueEntry(BaseModel):
    model_config = ANSWER

    code: str
    name_zh: str
    valid_days: int
    qc_level: QcLevel | None = Field(description="QC level required; null: none (an alliance's waiver)")
    note: str | None


class CatalogueDetail(CatalogueSummary):
    versions: list[str] = Field(description="every version of this catalogue, oldest first")
    grade_overlays: list[GradeOverlayView]
    items: list[CatalogueEntry]


class ItemCatalogue(BaseModel):
    model_config = ANSWER

    id: str
    tier: Tier
    scope: str
    version: str
    valid_days: int


class ItemView(BaseModel):
    """A unified item (codes/README.md, items.csv), with the catalogues in force that list it."""

    model_config = ANSWER

    code: str
    name_zh: str
    name_en: str
    kind: Annotated[str, OneOf(KINDS)]
    category: Annotated[str, OneOf(CATEGORIES)]
    specimen: str | None
    loinc: str | None
    loinc_equivalents: list[str] = Field(description="further LOINC codes of the same analyte "
                                                     "(codes/data/loinc_equivalents.csv)")
    unit: str | None = Field(description="UCUM unit of the unified result")
    modality: str | None
    body_part: str | None
    technique: str | None
    components: list[str] = Field(description="a panel's lab analytes")
    price_cny: float | None
    catalogues: list[ItemCatalogue]


class QcView(BaseModel):
    """A passed external quality assessment (室间质评)."""

    model_config = ANSWER

    level: QcLevel
    scope: str
    item: str | None
    category: str | None
    valid_from: IsoDate
    valid_to: IsoDate | None = Field(description="inclusive; null: open")


class InstitutionView(BaseModel):
    model_config = ANSWER

    id: str
    name_zh: str
    name_en: str
    grade: Annotated[str, OneOf(GRADES)]
    division: str = Field(description="GB/T 2260 code")
    alliances: list[str]
    qc: list[QcView]
    province: str = Field(description="2 digits")
    city: str = Field(description="4 digits")
    regions: list[str]
    mapping_version: str | None = Field(description="the institution's mapping table in use")


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


#: The columns of the catalogue versions as a table: :class:`CatalogueSummary`'s fields, in its order.
CATALOGUE_COLUMNS = tuple(CatalogueSummary.model_fields)


@router.get("/catalogues", summary="Every catalogue version, with whether it is in force at `at`",
            response_model=CatalogueList, responses={**refusals(422), **TABLE_RESPONSES})
def catalogues(request: Request, tier: str | None = None, at: AwareDatetime | None = None,
               format: TableFormat | None = Query(None, description="`csv`/`xlsx`: one row per version"),  # noqa: A002
               _: Principal = Depends(require(*ANY_ROLE))) -> Any:  # noqa: B008
    """As a table (CSV, Excel): the answer's ``catalogues``, one row per version, in its order."""
    book = context_of(request).book
    moment = at or datetime.now(UTC)
    rows = [_catalogue_summary(c, moment) for c in book.catalogues if tier is None or c.tier == tier]
    table = Table("catalogues", CATALOGUE_COLUMNS, rows)
    return answer_table(request, format, table,
                        lambda: {"at": moment.isoformat(), "codes_version": book.version, "catalogues": rows})


@router.get("/catalogues/{catalogue_id}", summary="One catalogue with its items (the version in force at `at`)",
            response_model=CatalogueDetail, responses=refusals(404, 422))
def catalogue(catalogue_id: str, request: Request, at: AwareDatetime | None = None,
              version: str | None = Query(None, description="a specific version instead of the one in force"),
              _: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:  # noqa: B008
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


@router.get("/items/{code}", summary="A unified item, with the catalogues in force that list it",
            response_model=ItemView, responses=refusals(404, 422))
def item(code: str, request: Request, at: AwareDatetime | None = None,
         _: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:  # noqa: B008
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


@router.get("/institutions/{institution_id}", summary="An institution: grade, division, alliances, QC certificates",
            response_model=InstitutionView, responses=refusals(404, 422))
def institution(institution_id: str, request: Request,
                _: Principal = Depends(require(*ANY_ROLE))) -> dict[str, Any]:  # noqa: B008
    book = context_of(request).book
    found = book.institutions.get(institution_id)
    if found is None:
        raise ApiError("institution_id", f"unknown institution {institution_id!r}", 404)
    body = _plain(asdict(found))
    body["province"], body["city"] = found.province, found.city
    body["regions"] = list(book.region_ids(found))
    body["mapping_version"] = book.mapping_version(found.id)
    return body


class UnmappedCode(BaseModel):
    model_config = ANSWER

    issuer: str
    local_code: str
    local_system: str | None
    results: int = Field(description="current results that carry this code")


class UnmappedGroup(BaseModel):
    model_config = ANSWER

    reason: str | None = Field(description="`unknown_code`, `unit_not_convertible`, `ambiguous`; null for results "
                                           "stored before reasons were recorded")
    zh: str
    en: str
    codes: list[UnmappedCode]


class UnmappedQueue(BaseModel):
    model_config = ANSWER

    codes_version: str
    groups: list[UnmappedGroup]


@router.get("/unmapped-codes", summary="Codes stored without a unified item, grouped by why (the unmapped queue)",
            response_model=UnmappedQueue, responses={**refusals(422), **TABLE_RESPONSES})
def unmapped(request: Request, institution: str | None = None,
             format: TableFormat | None = Query(None, description="`csv`/`xlsx`: one row per code"),  # noqa: A002
             who: Principal = Depends(require("operator", "source", "his"))) -> Any:  # noqa: B008
    """The queue ``hrx codes unmapped`` prints: per reason (``unknown_code``, ``unit_not_convertible``,
    ``ambiguous``; null for results stored before reasons were recorded) its heading in Chinese and English and
    the codes with how many current results carry them. No patient data: no audit record."""
    from codes.issues import REASONS, reason_title
    from exchange.store import unmapped_codes

    context = context_of(request)
    if who.role == "operator":
        if institution is None and who.scope not in (None, "national"):
            raise ApiError("institution", f"name an institution inside your scope {who.scope}", 403)
        if institution is not None:
            within_scope(who, context.book, institution, "institution")
    else:
        institution = institution or who.institution
        same_institution(who, institution, "institution")
    with context.database.connect() as conn:
        rows = unmapped_codes(conn, institution)
    groups = []
    for reason in [*REASONS, None]:
        codes = [{"issuer": r.issuer, "local_code": r.local_code, "local_system": r.local_system,
                  "results": r.results} for r in rows if r.reason == reason]
        if codes:
            zh, en = reason_title(reason)
            groups.append({"reason": reason, "zh": zh, "en": en, "codes": codes})
    book = context.book
    table = Table("unmapped-codes", ["reason", "reason_zh", "issuer", "issuer_name", "local_code", "local_system",
                                     "results"],
                  [{"reason": g["reason"], "reason_zh": g["zh"], **c,
                    "issuer_name": book.institutions[c["issuer"]].name_zh if c["issuer"] in book.institutions
                    else None} for g in groups for c in g["codes"]])
    return answer_table(request, format, table, lambda: {"codes_version": book.version, "groups": groups})
