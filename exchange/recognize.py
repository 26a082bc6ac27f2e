"""The recognition rules: may a prior result be reused by a requesting institution at a given moment?

For a prior result R (issuer I, reported at t, unified item c, status s) and a request (institution J,
moment ``at``), R is recognizable at tier T when (docs/rules.md, "Tiers", "Validity", "QC" and "Grades"):
- a catalogue of tier T, in force at ``at``, whose scope contains both I and J, lists c (for a panel, every
  component is present in R's report);
- ``at <= t + valid_days`` (the window is catalogue data, never a constant);
- s is final, amended or corrected;
- I held, at t, an EQA (室间质评) certificate for c or its category at a level covering T's required level,
  unless the catalogue waives QC;
- every grade overlay of the catalogue holds.
The narrowest recognizing tier is reported; ``valid_until`` is the latest expiry among the recognizing
catalogues, because a wider tier with a longer window still lets the clinician reuse the result.
The engine informs; the receiving clinician decides (以接诊医师判断为标准).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

from codes.calendar import BEIJING, beijing_minute
from codes.model import TIERS

FINAL_STATUSES = frozenset({"final", "amended", "corrected"})
QC_LEVEL_NAMES_ZH = {"city": "市级", "province": "省级", "region": "区域级", "national": "国家级"}
TIER_NAMES = {"alliance": ("医联体", "alliance"), "city": ("市域", "city"), "province": ("省域", "province"),
              "region": ("区域", "region"), "national": ("全国", "national")}


class Status(StrEnum):
    RECOGNIZABLE = "recognizable"
    EXPIRED = "expired"
    NOT_IN_CATALOGUE = "not_in_catalogue"
    QC_NOT_MET = "qc_not_met"
    NOT_FINAL = "not_final"
    OUT_OF_SCOPE = "out_of_scope"
    UNMAPPED = "unmapped"


class Reason(dict[str, str]):
    """Why, in Chinese and English: ``{"zh": …, "en": …}``. A dict, because answers go out as JSON by the
    thousand and orjson writes a dict far faster than a dataclass."""

    __slots__ = ()

    def __init__(self, zh: str, en: str) -> None:
        self["zh"] = zh
        self["en"] = en

    @property
    def zh(self) -> str:
        return self["zh"]

    @property
    def en(self) -> str:
        return self["en"]


class Answer(NamedTuple):
    """The verdict on one unified item of one prior result (a tuple: a long history builds thousands)."""

    item_code: str | None
    status: Status
    tier: str | None = None
    catalogue_id: str | None = None
    catalogue_version: str | None = None
    valid_until: datetime | None = None
    via: tuple[str, ...] = ()  # every catalogue id that recognizes it
    reasons: tuple[Reason, ...] = ()

    @property
    def recognizable(self) -> bool:
        return self.status is Status.RECOGNIZABLE


class Prior(NamedTuple):
    """What the rules need to know about a prior result."""

    issuer: str
    item_code: str | None
    status: str
    reported_at: datetime
    report_items: frozenset[str] = frozenset()  # unified codes present in the same report (panels)


class RecognitionMemo:
    """What depends only on the (immutable) code book, kept for the life of a process: the catalogues shared
    by an issuer and a requester for an item under a given set of catalogues in force, how each of them lists
    the item (window, the EQA validity windows that satisfy its QC level, the grade condition) and the answers
    that do not depend on the report time. A new code book means a new memo (the API builds both at start-up)."""

    def __init__(self) -> None:
        self.shared: dict[tuple[Any, ...], list[Any]] = {}
        self.listing: dict[tuple[Any, ...], list[Listed]] = {}
        #: (requester, catalogues in force) → a small number, so that per-result keys hash quickly.
        self.scopes: dict[tuple[Any, ...], int] = {}
        #: scope → (issuer, item, status) → its plan (see ``Recognizer.answer``)
        self.plans: dict[int, dict[tuple[str, str | None, str], Plan]] = {}


@dataclass(frozen=True, slots=True)
class Listed:
    """How one shared catalogue lists an item for one (issuer, requester) pair: the per-result rule inputs."""

    catalogue: Any
    window: timedelta
    qc_windows: tuple[tuple[date, date], ...] | None  # None: the catalogue waives QC
    qc_failure: Reason
    grade_ok: bool
    grade_failure: Reason
    expired_zh: str  # the "past its window" reason up to the expiry time, which each result appends
    expired_en: str

    @property
    def fails(self) -> Reason | None:
        """The failure whatever the report date, if any: no EQA certificate at all for the item, or QC waived
        and the grade condition unmet. A listing made only of such failures is answered once, in the plan."""
        if self.qc_windows == ():
            return self.qc_failure
        return self.grade_failure if self.qc_windows is None and not self.grade_ok else None


#: How the rules go for one (issuer, item, status) under one scope: the item's panel components, then for a
#: report holding all of them and for one that does not, either the answer itself (it does not depend on the
#: report time: unmapped, not final, unknown issuer, not listed) or the listings to judge the report time against.
Plan = tuple[frozenset[str], "Answer | list[Listed]", "Answer | list[Listed]"]


class Recognizer:
    """Answers for one requesting institution at one moment (no database access: the code book is in memory)."""

    def __init__(self, book: Any, requester_id: str, at: datetime, memo: RecognitionMemo | None = None) -> None:
        self.book = book
        self.requester = book.institutions[requester_id]
        if at.tzinfo is None:  # a moment without an offset is Beijing time (docs/rules.md, "Dates")
            at = at.replace(tzinfo=BEIJING)
        self.at = at
        #: Instants in answers are given in the requester's offset (the one its ``at`` carries).
        self.tz = at.tzinfo
        self.in_force = book.catalogues_in_force(at)
        self.memo = memo or RecognitionMemo()
        # The catalogues in force and the requester are part of every shared/listing key.
        scope = (requester_id, tuple((c.id, c.version) for c in self.in_force))
        self._scope = self.memo.scopes.setdefault(scope, len(self.memo.scopes))
        self._plans = self.memo.plans.setdefault(self._scope, {})
        self._reported: datetime | None = None  # see _judge
        self._day: date | None = None
        self._reported_local: datetime | None = None
        self._expiries: dict[str, tuple[datetime, Reason | None]] = {}

    def shared(self, issuer: Any, item: Any) -> list[Any]:
        key = (self._scope, issuer.id, item.code)
        found = self.memo.shared.get(key)
        if found is None:
            found = self.memo.shared[key] = [c for c in self.in_force if c.covers(issuer, self.book, item)
                                             and c.covers(self.requester, self.book, item)]
        return found

    def listing(self, issuer: Any, item: Any, components_present: bool) -> list[Listed]:
        """Shared catalogues that list ``item`` (panels: only when its components are present), narrowest first."""
        key = (self._scope, issuer.id, item.code, components_present)
        found = self.memo.listing.get(key)
        if found is None:
            found = []
            for c in self.shared(issuer, item):
                entry = c.item(item.code)
                if entry is None or (item.components and not components_present):
                    continue
                level = entry.qc_level  # resolved by codes/: the item's, else the catalogue's, else the tier's
                found.append(Listed(
                    c, timedelta(days=entry.valid_days), None if level is None else _qc_windows(issuer, item, level),
                    Reason(f"{c.id}：出具机构在报告时未持有覆盖该项目的{QC_LEVEL_NAMES_ZH.get(level, level)}"
                           "及以上室间质评合格证书",
                           f"{c.id}: the issuer held no {level}-level (or higher) EQA certificate for this item "
                           "when it reported"),
                    c.grade_allows(self.requester.grade, issuer.grade),
                    Reason(f"{c.id}：机构等级条件不满足（{issuer.grade} → {self.requester.grade}）",
                           f"{c.id}: grade condition not met ({issuer.grade} → {self.requester.grade})"),
                    f"{c.id}：已超过互认时限 {entry.valid_days} 天（",
                    f"{c.id}: past its {entry.valid_days}-day window (expired "))
            found.sort(key=lambda listed: TIERS.index(listed.catalogue.tier))
            self.memo.listing[key] = found
        return found

    def __call__(self, prior: Prior) -> Answer:
        return self.answer(prior.issuer, prior.item_code, prior.status, prior.reported_at, prior.report_items)

    def answer(self, issuer: str, item_code: str | None, status: str, reported_at: datetime,
               report_items: frozenset[str] = frozenset()) -> Answer:
        """The answer for one prior item (``__call__`` without building a ``Prior``: a check asks thousands)."""
        plan = self._plans.get((issuer, item_code, status))
        if plan is None:
            plan = self._plans[(issuer, item_code, status)] = _plan(self, issuer, item_code, status)
        components, complete, incomplete = plan
        found = complete if not components or components <= report_items else incomplete
        if found.__class__ is not list:
            return found  # type: ignore[return-value]
        return _judge(self, found, item_code, reported_at)  # type: ignore[arg-type]


def recognize(book: Any, prior: Prior, requester_id: str, at: datetime) -> Answer:
    """Apply the rules to one prior item for ``requester_id`` at ``at``; every status carries its reasons."""
    return Recognizer(book, requester_id, at)(prior)


def _qc_windows(issuer: Any, item: Any, required: str) -> tuple[tuple[date, date], ...]:
    """Validity windows of the issuer's EQA certificates at ``required`` level or higher covering ``item``:
    a result passes QC when its report date falls in one of them (found once per listing, compared per result)."""
    return tuple((c.valid_from, c.valid_to or date.max) for c in issuer.qc
                 if c.satisfies(required, item, c.valid_from))


def _stamp(moment: datetime) -> str:
    """``moment.isoformat()``, written by orjson (RFC 3339, the same text) in a third of the time: the rules
    stamp every expiry they report, thousands per check of a long history."""
    return orjson.dumps(moment)[1:-1].decode()


def _plan(ctx: Recognizer, issuer_id: str, item_code: str | None, status: str) -> Plan:
    book = ctx.book
    item = book.items.get(item_code) if item_code is not None else None
    issuer = book.institutions.get(issuer_id)
    if item is None or status not in FINAL_STATUSES or issuer is None:
        unusable = _unusable(issuer_id, item, status)
        return frozenset(), unusable, unusable
    components = frozenset(item.components)

    def listed(panel_complete: bool) -> Answer | list[Listed]:
        found = ctx.listing(issuer, item, panel_complete)
        if not found:
            return _not_listed(ctx, issuer, item)
        if all(listed.fails is not None for listed in found):
            return _failing(item.code, found)
        return found

    complete = listed(True)
    return components, complete, listed(False) if components else complete


def _judge(ctx: Recognizer, listing: list[Listed], code: str | None, reported_at: datetime) -> Answer:
    """The per-result part of the rules: QC at the report date, the grade condition, the window."""
    if reported_at is not ctx._reported:  # a result's items come in a row and share its expiries
        # QC dates are Beijing dates (docs/rules.md, "Dates"); expiries are told in the requester's offset.
        ctx._reported, ctx._day, ctx._expiries = reported_at, reported_at.astimezone(BEIJING).date(), {}
        ctx._reported_local = reported_at.astimezone(ctx.tz)
    day, expiries = ctx._day, ctx._expiries
    recognizing: list[tuple[Any, datetime]] = []
    expired: list[datetime] = []
    failures: list[Reason] = []
    qc_failed = grade_failed = False
    for listed in listing:
        windows = listed.qc_windows
        if windows is not None:
            for start, end in windows:
                if start <= day <= end:
                    break
            else:
                qc_failed = True
                failures.append(listed.qc_failure)
                continue
        if not listed.grade_ok:
            grade_failed = True
            failures.append(listed.grade_failure)
            continue
        # The expiry and its reason depend only on the catalogue and its window (both named by the reason's
        # text), the report time and the moment of the check.
        found = expiries.get(listed.expired_zh)
        if found is None:
            until = ctx._reported_local + listed.window
            reason = None
            if ctx.at > until:
                reason = Reason(listed.expired_zh + beijing_minute(until) + " 到期）",
                                listed.expired_en + _stamp(until) + ")")
            found = expiries[listed.expired_zh] = (until, reason)
        until, reason = found
        if reason is not None:
            expired.append(until)
            failures.append(reason)
            continue
        recognizing.append((listed.catalogue, until))
    if recognizing:
        narrowest = recognizing[0][0]
        valid_until = max(until for _, until in recognizing)
        zh, en = TIER_NAMES[narrowest.tier]
        return Answer(code, Status.RECOGNIZABLE, narrowest.tier, narrowest.id, narrowest.version, valid_until,
                      via=tuple(c.id for c, _ in recognizing), reasons=(Reason(
                          f"可互认：{zh}互认目录 {narrowest.id}（版本 {narrowest.version}），"
                          f"有效至 {beijing_minute(valid_until)}（北京时间）",
                          f"recognizable under the {en} catalogue {narrowest.id} (version {narrowest.version}) "
                          f"until {_stamp(valid_until)}"),))
    first = listing[0].catalogue
    if expired:
        status = Status.EXPIRED
    elif qc_failed:
        status = Status.QC_NOT_MET
    elif grade_failed:
        status = Status.OUT_OF_SCOPE
    else:  # pragma: no cover - every listing either recognizes or records a failure
        status = Status.NOT_IN_CATALOGUE
    return Answer(code, status, first.tier, first.id, first.version, max(expired) if expired else None,
                  reasons=tuple(failures))


def _failing(code: str, listing: list[Listed]) -> Answer:
    """What ``_judge`` answers, whatever the report date, when every listing fails regardless of it."""
    first = listing[0].catalogue
    status = Status.QC_NOT_MET if any(listed.qc_windows == () for listed in listing) else Status.OUT_OF_SCOPE
    return Answer(code, status, first.tier, first.id, first.version, None,
                  reasons=tuple(listed.fails for listed in listing))


def _unusable(issuer_id: str, item: Any, status: str) -> Answer:
    """Unmapped, not final, or from an unknown issuer: no catalogue is even consulted."""
    if item is None:
        return Answer(None, Status.UNMAPPED, reasons=(Reason(
            "该结果没有统一互认项目（编码未知、单位无法换算或对应多个项目，原因见结果的映射说明），结果仅供查阅，不可互认",
            "the result has no unified item (an unknown code, a unit that cannot be converted or a code naming "
            "several items: its mapping issue says which): viewable, never recognizable"),))
    if status not in FINAL_STATUSES:
        return Answer(item.code, Status.NOT_FINAL, reasons=(Reason(
            f"报告状态为“{status}”，仅终审、修订或更正后的报告可互认",
            f"report status is {status!r}; only final, amended or corrected reports are recognizable"),))
    return Answer(item.code, Status.OUT_OF_SCOPE, reasons=(Reason(
        f"出具机构 {issuer_id} 不在机构目录中", f"issuer {issuer_id} is not in the registry"),))


def _not_listed(ctx: Recognizer, issuer: Any, item: Any) -> Answer:
    """No shared catalogue in force, or none of them lists the item (or the panel is incomplete)."""
    shared = ctx.shared(issuer, item)
    if not shared:
        return Answer(item.code, Status.OUT_OF_SCOPE, reasons=(Reason(
            "出具机构与申请机构在检查时刻没有共同适用的互认目录（医联体、市、省、区域或全国）",
            "issuer and requester share no catalogue in force (alliance, city, province, region or national)"),))
    names = ", ".join(sorted(c.id for c in shared))
    return Answer(item.code, Status.NOT_IN_CATALOGUE, reasons=(Reason(
        f"共同适用的互认目录（{names}）未收录该项目" + ("或报告缺少组合项目的组成项" if item.components else ""),
        f"the shared catalogues ({names}) do not list this item"
        + (" or the report lacks panel components" if item.components else "")),))


def items_of(result: Any) -> list[tuple[str | None, frozenset[str]]]:
    """The unified items a stored result speaks for: its own item and each observation's item."""
    own = result.unified_code
    found = [o.unified_code for o in result.observations if o.unified_code]
    present = frozenset(found)
    codes: list[str | None] = [own] if own else []
    codes += [c for c in dict.fromkeys(found) if c != own]
    return [(c, present) for c in codes or (None,)]


def best(answers: Iterable[tuple[Answer, Any]]) -> tuple[Answer, Any] | None:
    """Among recognizable answers, the one valid longest (then the most recently reported)."""
    ok = [(a, r) for a, r in answers if a.recognizable]
    if not ok:
        return None
    return max(ok, key=lambda ar: (ar[0].valid_until, ar[1].reported_at))
