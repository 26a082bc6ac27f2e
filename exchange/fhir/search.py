"""The search parameters the FHIR server supports, and the SQL that answers them (one place: the handlers, the
checks of a request and the CapabilityStatement all read :data:`SEARCHES`).

Every search is of one patient's results (the access rules are per patient: docs/rules.md, "Who may see what"),
so every query starts from the ``result_heads`` index on (patient, reported_at) and the filters narrow that
patient's rows in SQL; paging is by keyset (the last row's sort key and natural key in the ``next`` link), so a
``next`` link gives the same page however many results arrive meanwhile, and no page repeats or skips a row.
"""
from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (ColumnElement, Connection, DateTime, Select, and_, case, cast, false, func, literal, not_, or_,
                        select, tuple_)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import aliased

from exchange.fhir import params as p
from exchange.fhir.params import SearchError
from exchange.fhir.resources import (CATEGORY_SYSTEM, DIAGNOSTIC_SERVICE, DICOM_MODALITY, ITEM_SYSTEM,
                                     LOCAL_CODE_SYSTEM, LOINC, OBSERVATION_CATEGORY)
from exchange.store.models import Observation, Result, ResultHead
from exchange.store.results import StoredObservation

#: ``_count`` when none is given, and the most one page holds (a larger ``_count`` is lowered to it, as HAPI does).
DEFAULT_COUNT = 50
MAX_COUNT = 1000
#: Parameters every search accepts that change nothing in the answer (``_format=json``; the answer is JSON).
IGNORED = frozenset({"_format", "_pretty"})
PATIENT_ID = r"^[0-9a-f]{64}$"


@dataclass(frozen=True)
class Scope:
    """What a filter needs besides its values: the code book and the database dialect."""

    book: Any
    dialect: str


Filter = Callable[[Scope, list[str]], ColumnElement[bool]]


@dataclass(frozen=True)
class Param:
    """A search parameter: its FHIR name and type, what it searches, and the clause one occurrence adds (the
    OR of its comma-separated values)."""

    name: str
    type: str  # FHIR SearchParamType
    documentation: str
    where: Filter | None = None  # None: the patient, which every search is scoped to


@dataclass(frozen=True)
class Search:
    """One resource type's search: parameters, sort keys (name → documentation), ``_include`` values."""

    resource: str
    params: tuple[Param, ...]
    sorts: dict[str, str] = field(default_factory=dict)
    default_sort: str = ""
    includes: tuple[str, ...] = ()

    def param(self, name: str) -> Param | None:
        return next((q for q in self.params if q.name == name), None)


# -- the columns searches read ---------------------------------------------------------------------------------

_FIRST = aliased(Result)
#: A result's FHIR id: the row id of its first stored version (stable when versions are added).
FHIR_ID = (select(func.min(_FIRST.id)).where(_FIRST.issuer == ResultHead.issuer,
                                             _FIRST.result_id == ResultHead.result_id)
           .correlate(ResultHead).scalar_subquery())
EFFECTIVE = func.coalesce(Result.collected_at, Result.reported_at)  # FHIR ``effective``: collected, else reported
#: The stored event is read for imaging results only (study, report, retrieval); lab values are in observations.
EVENT = case((Result.kind == "imaging", Result.event), else_=None).label("event")
RESULT_COLUMNS = (Result.id, Result.issuer, Result.result_id, Result.version, Result.kind, Result.status,
                  Result.patient, Result.unified_code, Result.local_code, Result.collected_at, Result.reported_at)
OBSERVATION_COLUMNS = tuple(Observation.__table__.c[name].label(f"o_{name}") for name in StoredObservation._fields)


def _study(scope: Scope, name: str) -> ColumnElement[Any]:
    """A field of the stored event's ``study`` block, as text (the study is not a column: imaging only)."""
    if scope.dialect == "postgresql":
        return func.jsonb_extract_path_text(cast(Result.event, JSONB), "study", name)
    return func.json_extract(Result.event, f"$.study.{name}")


def _study_started(scope: Scope) -> ColumnElement[Any]:
    if scope.dialect == "postgresql":
        return cast(_study(scope, "study_at"), DateTime(timezone=True))
    return func.datetime(_study(scope, "study_at"))  # SQLite: 'YYYY-MM-DD HH:MM:SS' in UTC


def _study_instant(scope: Scope, moment: datetime) -> Any:
    """``moment`` as the study's start compares with it: UTC text on SQLite, an instant on PostgreSQL."""
    if scope.dialect != "postgresql":
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return moment


# -- filters ---------------------------------------------------------------------------------------------------

def _any(clauses: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
    return or_(*clauses) if clauses else false()


def _items(scope: Scope, keep: Callable[[Any], bool]) -> list[str]:
    return [code for code, item in scope.book.items.items() if keep(item)]


def _loinc_items(scope: Scope, loinc: str | None) -> list[str]:
    if loinc is None:
        return _items(scope, lambda item: bool(item.loinc))
    found = scope.book.item_by_loinc(loinc)
    return [found.code] if found is not None else []


def _code(unified: Any, local: Any, local_system: Any | None) -> Filter:
    """``code``: the unified item (``urn:hrx:item``), its LOINC code, or the issuer's own code (under the
    system it was sent with, or ``urn:hrx:local-code:<institution>``)."""

    def where(scope: Scope, values: list[str]) -> ColumnElement[bool]:
        clauses = []
        for raw in values:
            tok = p.token(raw, "code")
            system, code = tok.system, tok.code
            if system is None:
                clauses.append(or_(unified == code, local == code, unified.in_(_loinc_items(scope, code))))
            elif system == ITEM_SYSTEM:
                clauses.append(unified == code if code else unified.is_not(None))
            elif system == LOINC:
                clauses.append(unified.in_(_loinc_items(scope, code)))
            elif system.startswith(LOCAL_CODE_SYSTEM):
                own = and_(Result.issuer == system[len(LOCAL_CODE_SYSTEM):],
                           *(() if local_system is None else (local_system.is_(None),)))
                clauses.append(and_(own, local == code) if code else own)
            elif local_system is not None and system:
                clauses.append(and_(local_system == system, local == code) if code else local_system == system)
            else:
                clauses.append(false())
        return _any(clauses)

    return where


def _category(service_system: str, kinds: dict[str, str], unified: Any) -> Filter:
    """``category``: lab or imaging (``service_system``), or the code book's category of the item."""

    def where(scope: Scope, values: list[str]) -> ColumnElement[bool]:
        clauses = []
        categories = {item.category for item in scope.book.items.values()}
        for raw in values:
            tok = p.token(raw, "category")
            if tok.system in (None, service_system) and tok.code in kinds:
                clauses.append(Result.kind == kinds[tok.code])
            elif tok.system in (None, CATEGORY_SYSTEM) and tok.code in categories:
                clauses.append(unified.in_(_items(scope, lambda item, c=tok.code: item.category == c)))
            else:
                clauses.append(false())
        return _any(clauses)

    return where


def _dates(column: Callable[[Scope], ColumnElement[Any]], name: str,
           bound: Callable[[Scope, datetime], Any] = lambda scope, moment: moment) -> Filter:
    """A date parameter on ``column``; ``bound`` makes a range's ends comparable with it."""

    def where(scope: Scope, values: list[str]) -> ColumnElement[bool]:
        expr = column(scope)
        clauses = []
        for raw in values:
            rng = p.date_range(raw, name)
            low, high = bound(scope, rng.low), bound(scope, rng.high)
            clauses.append({"eq": lambda: and_(expr >= low, expr < high), "ne": lambda: or_(expr < low, expr >= high),
                            "gt": lambda: expr >= high, "sa": lambda: expr >= high, "lt": lambda: expr < low,
                            "eb": lambda: expr < low, "ge": lambda: expr >= low, "le": lambda: expr < high,
                            }[rng.prefix]())
        return _any(clauses)

    return where


def _tokens(column: Callable[[Scope], ColumnElement[Any]], name: str, system: str | None = None) -> Filter:
    """A token compared with one column, under ``system`` (or any system)."""

    def where(scope: Scope, values: list[str]) -> ColumnElement[bool]:
        expr = column(scope)
        codes = []
        for raw in values:
            tok = p.token(raw, name)
            if tok.code is not None and tok.system in (None, system):
                codes.append(tok.code)
        return expr.in_(codes) if codes else false()

    return where


def _performer(scope: Scope, values: list[str]) -> ColumnElement[bool]:
    return Result.issuer.in_([p.reference(raw, "performer", "Organization") for raw in values])


def _value_quantity(scope: Scope, values: list[str]) -> ColumnElement[bool]:
    value, unit = Observation.value, Observation.unit
    clauses = []
    for raw in values:
        q = p.quantity(raw, "value-quantity")
        number = {"eq": lambda: and_(value >= q.low, value < q.high), "ne": lambda: or_(value < q.low, value >= q.high),
                  "gt": lambda: value > q.value, "sa": lambda: value > q.value, "lt": lambda: value < q.value,
                  "eb": lambda: value < q.value, "ge": lambda: value >= q.value, "le": lambda: value <= q.value,
                  }[q.prefix]()
        if q.code is not None:
            number = and_(number, unit == q.code)
        if q.system not in (None, "http://unitsofmeasure.org"):
            number = false()
        clauses.append(number)
    return _any(clauses)


_PATIENT = Param("patient", "reference", "The patient: Patient/<id>, the id from Patient?identifier=…")
_SUBJECT = Param("subject", "reference", "The same as patient (Patient/<id>)")

SEARCHES: dict[str, Search] = {s.resource: s for s in (
    Search("DiagnosticReport", (
        _PATIENT, _SUBJECT,
        Param("category", "token", "LAB or RAD (v2-0074), or the item's category (urn:hrx:item-category)",
              _category(DIAGNOSTIC_SERVICE, {"LAB": "lab", "RAD": "imaging"}, Result.unified_code)),
        Param("code", "token", "The unified item (urn:hrx:item), its LOINC code, or the issuer's own code "
              "(urn:hrx:local-code:<institution>); comma-separated values are OR",
              _code(Result.unified_code, Result.local_code, None)),
        Param("date", "date", "effective: when the specimen was collected, else when reported; with prefixes",
              _dates(lambda scope: EFFECTIVE, "date")),
        Param("issued", "date", "When the report was issued; with prefixes",
              _dates(lambda scope: ResultHead.reported_at, "issued")),
        Param("status", "token", "preliminary | final | amended | corrected | cancelled | entered-in-error",
              _tokens(lambda scope: Result.status, "status", "http://hl7.org/fhir/diagnostic-report-status")),
        Param("performer", "reference", "The issuer: Organization/<institution id>", _performer),
    ), {"issued": "When the report was issued", "date": "effective (collected, else reported)"}, "-issued",
        ("DiagnosticReport:result", "DiagnosticReport:performer")),
    Search("Observation", (
        _PATIENT, _SUBJECT,
        Param("code", "token", "The unified item (urn:hrx:item), its LOINC code, or the issuer's own code under "
              "its system; comma-separated values are OR",
              _code(Observation.unified_code, Observation.local_code, Observation.local_system)),
        Param("category", "token", "laboratory or imaging (observation-category), or the item's category "
              "(urn:hrx:item-category)",
              _category(OBSERVATION_CATEGORY, {"laboratory": "lab", "imaging": "imaging"}, Observation.unified_code)),
        Param("date", "date", "effective: collected, else reported; prefixes eq ne gt lt ge le sa eb",
              _dates(lambda scope: EFFECTIVE, "date")),
        Param("value-quantity", "quantity", "[prefix]number|system|code (UCUM)", _value_quantity),
    ), {"date": "effective (collected, else reported)"}, "-date", ()),
    Search("ImagingStudy", (
        _PATIENT, _SUBJECT,
        Param("started", "date", "When the study started (DICOM study date and time); with prefixes",
              _dates(_study_started, "started", _study_instant)),
        Param("modality", "token", "DICOM modality code (DCM), e.g. CT, MR",
              _tokens(lambda scope: _study(scope, "modality"), "modality", DICOM_MODALITY)),
    ), {}, "-issued", ()),
)}


# -- a parsed request ------------------------------------------------------------------------------------------

@dataclass
class Request:
    """A search request, checked against its :class:`Search`."""

    search: Search
    patient: str
    filters: list[ColumnElement[bool]]  # one clause per occurrence of a parameter (AND)
    count: int
    sort: str  # "issued", "-date", …
    includes: tuple[str, ...]
    cursor: tuple[Any, ...] | None
    used: list[tuple[str, str]]  # the parameters the search applied, for the self link and the audit
    unknown: list[str]


def parse(search: Search, items: Sequence[tuple[str, str]], strict: bool, scope: Scope, *,
          lastn: bool = False) -> Request:
    """Check every parameter; unknown ones are ignored and listed (refused under ``Prefer: handling=strict``)."""
    patients: list[str] = []
    filters: list[ColumnElement[bool]] = []
    used: list[tuple[str, str]] = []
    unknown: list[str] = []
    count, sort, includes, cursor = DEFAULT_COUNT, search.default_sort, [], None
    for name, raw in items:
        base, _, modifier = name.partition(":")
        if base in IGNORED:
            continue
        if lastn and base == "max":
            used.append((name, raw))
            continue
        if base == "_count" and not lastn:
            count = p.count(raw, "_count", MAX_COUNT)
        elif base == "_sort" and search.sorts and not lastn:
            key = raw.removeprefix("-")
            if "," in raw or key not in search.sorts:
                raise SearchError(f"_sort: {raw!r} is not supported (supported: "
                                  f"{', '.join(search.sorts)}, each optionally with '-')", "_sort")
            sort = raw
        elif base == "_include" and search.includes and not lastn:
            if raw not in search.includes:
                raise SearchError(f"_include: {raw!r} is not supported (supported: {', '.join(search.includes)})",
                                  "_include")
            includes.append(raw)
        elif base == "_page" and not lastn:
            cursor = _cursor(raw)
            continue  # not part of the search itself: the self link of the first page is the link of every page
        elif (param := search.param(base)) is not None:
            if modifier:
                raise SearchError(f"{name}: the modifier :{modifier} is not supported", name)
            if param.where is None:
                patients += [_patient(value) for value in p.split_values(raw)]
            else:  # the clause is built now: a bad value is refused before anything is read
                filters.append(param.where(scope, p.split_values(raw)))
        else:
            unknown.append(name)
            continue
        used.append((name, raw))
    if unknown and strict:
        raise SearchError(f"unknown search parameters: {', '.join(unknown)} (Prefer: handling=strict)",
                          unknown[0], code="not-supported")
    if len(set(patients)) != 1:
        raise SearchError(f"{search.resource} search needs exactly one patient (patient=Patient/<id>); "
                          "the exchange answers one patient's results at a time", "patient", code="required")
    return Request(search, patients[0], filters, count, sort, tuple(includes), cursor, used, unknown)


def _patient(raw: str) -> str:
    ident = p.reference(raw, "patient", "Patient")
    if len(ident) != 64 or any(c not in "0123456789abcdef" for c in ident):
        raise SearchError(f"patient: {raw!r} is not a patient id of this server (resolve a resident ID with "
                          "Patient?identifier=urn:oid:2.16.156.10011.1.3|<resident ID>)", "patient")
    return ident


def _cursor(raw: str) -> tuple[Any, ...]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        moment = datetime.fromisoformat(values[0])
        if moment.tzinfo is None or not all(isinstance(v, str) for v in values[1:3]):
            raise ValueError("malformed")
        return (moment, *values[1:])
    except (ValueError, TypeError, IndexError, orjson.JSONDecodeError):
        raise SearchError(f"_page: {raw!r} is not a page of this server", "_page") from None


def cursor_token(values: Sequence[Any]) -> str:
    first, *rest = values
    return base64.urlsafe_b64encode(orjson.dumps([first.isoformat(), *rest])).decode().rstrip("=")


# -- the queries -----------------------------------------------------------------------------------------------

@dataclass
class Page:
    rows: list[Any]
    total: int
    next: tuple[Any, ...] | None  # the keyset of the next page, None on the last one


def _where(request: Request, scope: Scope, blocked: set[tuple[str, str]]) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [ResultHead.patient == request.patient, *request.filters]
    if request.search.resource == "ImagingStudy":
        clauses += [Result.kind == "imaging", _study(scope, "study_instance_uid").is_not(None)]
    if blocked:  # the patient's sharing blocks (docs/rules.md, "Who may see what")
        clauses.append(not_(tuple_(ResultHead.issuer, ResultHead.result_id).in_(sorted(blocked))))
    return clauses


def _keyset(keys: Sequence[ColumnElement[Any]], values: Sequence[Any], descending: bool) -> ColumnElement[bool]:
    """Rows after ``values`` in the order of ``keys`` (all ascending or all descending)."""
    clause: ColumnElement[bool] = false()
    for i in reversed(range(len(keys))):
        after = keys[i] < values[i] if descending else keys[i] > values[i]
        clause = or_(after, and_(keys[i] == values[i], clause)) if i < len(keys) - 1 else after
    return clause


def search(conn: Connection, book: Any, request: Request, blocked: set[tuple[str, str]]) -> Page:
    """One page of ``request``'s matches (DiagnosticReport and ImagingStudy: results; Observation: values),
    with the total count of matches."""
    scope = Scope(book, conn.dialect.name)
    where = _where(request, scope, blocked)
    observations = request.search.resource == "Observation"
    descending = request.sort.startswith("-")
    sort_key = {"issued": ResultHead.reported_at, "date": EFFECTIVE}[request.sort.removeprefix("-")]
    keys = [sort_key, ResultHead.issuer, ResultHead.result_id] + ([Observation.seq] if observations else [])
    base: Select[Any] = select(FHIR_ID.label("fhir_id"), *RESULT_COLUMNS, EVENT,
                               *(OBSERVATION_COLUMNS if observations else ()))
    base = base.select_from(ResultHead).join(Result, Result.id == ResultHead.result_pk)
    counted = select(func.count()).select_from(ResultHead).join(Result, Result.id == ResultHead.result_pk)
    if observations:
        base = base.join(Observation, Observation.result_pk == Result.id)
        counted = counted.join(Observation, Observation.result_pk == Result.id)
    total = conn.execute(counted.where(*where)).scalar_one()
    if request.count == 0:
        return Page([], total, None)
    query = base.where(*where)
    if request.cursor is not None:
        if len(request.cursor) != len(keys):
            raise SearchError("_page: not a page of this search", "_page")
        query = query.where(_keyset(keys, request.cursor, descending))
    query = query.order_by(*(k.desc() if descending else k.asc() for k in keys)).limit(request.count + 1)
    rows = conn.execute(query).all()
    following = None
    if len(rows) > request.count:
        rows = rows[:request.count]
        last = rows[-1]
        moment = last.reported_at if request.sort.removeprefix("-") == "issued" else (last.collected_at or
                                                                                    last.reported_at)
        following = (moment, last.issuer, last.result_id) + ((last.o_seq,) if observations else ())
    return Page(rows, total, following)


def lastn(conn: Connection, book: Any, request: Request, most: int, blocked: set[tuple[str, str]]) -> list[Any]:
    """``Observation/$lastn``: per code (the unified item, else the issuer's own code), the ``most`` latest
    values, newest first (a window function: one pass over the patient's rows)."""
    scope = Scope(book, conn.dialect.name)
    group = func.coalesce(Observation.unified_code,
                          Result.issuer + literal("|") + func.coalesce(Observation.local_system, literal(""))
                          + literal("|") + Observation.local_code)
    rank = func.row_number().over(partition_by=group, order_by=(EFFECTIVE.desc(), ResultHead.issuer.desc(),
                                                                ResultHead.result_id.desc(), Observation.seq.desc()))
    inner = (select(FHIR_ID.label("fhir_id"), *RESULT_COLUMNS, EVENT, *OBSERVATION_COLUMNS, group.label("grp"),
                    rank.label("rank"), EFFECTIVE.label("effective"))
             .select_from(ResultHead).join(Result, Result.id == ResultHead.result_pk)
             .join(Observation, Observation.result_pk == Result.id)
             .where(*_where(request, scope, blocked))).subquery()
    return list(conn.execute(select(inner).where(inner.c.rank <= most)
                             .order_by(inner.c.grp, inner.c.rank)).all())


def report_items(conn: Connection, pks: Sequence[int]) -> dict[int, frozenset[str]]:
    """The unified items present in each report (a panel is recognized only with its components)."""
    found: dict[int, set[str]] = {pk: set() for pk in pks}
    if pks:
        for pk, code in conn.execute(select(Observation.result_pk, Observation.unified_code)
                                     .where(Observation.result_pk.in_(list(pks)),
                                            Observation.unified_code.is_not(None))):
            found[pk].add(code)
    return {pk: frozenset(codes) for pk, codes in found.items()}


# -- reads by id -----------------------------------------------------------------------------------------------

def versions_of(conn: Connection, fhir_id: str) -> list[Any]:
    """Every stored version's ``results`` row (with ``fhir_id``) of a FHIR id, newest first; empty if unknown."""
    head = result_of(conn, fhir_id)
    if head is None:
        return []
    return list(conn.execute(select(literal(head.fhir_id).label("fhir_id"), *RESULT_COLUMNS, Result.event)
                             .where(Result.issuer == head.issuer, Result.result_id == head.result_id)
                             .order_by(Result.version.desc())).all())


def result_of(conn: Connection, fhir_id: str, version: int | None = None) -> Any | None:
    """The ``results`` row (with ``fhir_id``) of a FHIR id: the head, or the given version; None if unknown.
    An id is the row id of the result's first version: any other row id is not an id of the result."""
    if not fhir_id.isdigit() or len(fhir_id) > 18:
        return None
    first = conn.execute(select(Result.issuer, Result.result_id).where(Result.id == int(fhir_id))).first()
    if first is None:
        return None
    same = and_(Result.issuer == first.issuer, Result.result_id == first.result_id)
    if conn.execute(select(func.min(Result.id)).where(same)).scalar_one() != int(fhir_id):
        return None
    columns = (literal(int(fhir_id)).label("fhir_id"), *RESULT_COLUMNS, Result.event)
    if version is None:
        query = select(*columns).join(ResultHead, ResultHead.result_pk == Result.id).where(same)
    else:
        query = select(*columns).where(same, Result.version == version)
    return conn.execute(query).first()


