"""The recognition rules: may a prior result be reused by a requesting institution at a given moment?

For a prior result R (issuer I, reported at t, unified item c, status s) and a request (institution J,
moment ``at``), R is recognizable at tier T when (DOMAIN.md §1–§3; issue #4):
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
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

TIERS = ("alliance", "city", "province", "region", "national")
FINAL_STATUSES = frozenset({"final", "amended", "corrected"})
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


@dataclass(frozen=True, slots=True)
class Reason:
    zh: str
    en: str

    def as_dict(self) -> dict[str, str]:
        return {"zh": self.zh, "en": self.en}


@dataclass(frozen=True)
class Answer:
    """The verdict on one unified item of one prior result."""

    item_code: str | None
    status: Status
    tier: str | None = None
    catalogue_id: str | None = None
    catalogue_version: str | None = None
    valid_until: datetime | None = None
    via: tuple[str, ...] = ()  # every catalogue id that recognizes it
    reasons: tuple[Reason, ...] = field(default=())

    @property
    def recognizable(self) -> bool:
        return self.status is Status.RECOGNIZABLE

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "tier": self.tier, "catalogue_id": self.catalogue_id,
                "catalogue_version": self.catalogue_version,
                "valid_until": self.valid_until.isoformat() if self.valid_until else None,
                "via": list(self.via), "reasons": [r.as_dict() for r in self.reasons]}


@dataclass(frozen=True, slots=True)
class Prior:
    """What the rules need to know about a prior result."""

    issuer: str
    item_code: str | None
    status: str
    reported_at: datetime
    report_items: frozenset[str] = frozenset()  # unified codes present in the same report (panels)


class RecognitionMemo:
    """What depends only on the (immutable) code book, kept for the life of a process: the catalogues shared
    by an issuer and a requester for an item under a given set of catalogues in force, their listing of the
    item, and the validity windows of the EQA certificates that could satisfy a level. A new code book means
    a new memo (the API builds both at start-up)."""

    def __init__(self) -> None:
        self.shared: dict[tuple[Any, ...], list[Any]] = {}
        self.listing: dict[tuple[Any, ...], list[tuple[Any, Any]]] = {}
        self.qc: dict[tuple[str, str, str], list[tuple[date, date]]] = {}


class Recognizer:
    """Answers for one requesting institution at one moment (no database access: the code book is in memory)."""

    def __init__(self, book: Any, requester_id: str, at: datetime, memo: RecognitionMemo | None = None) -> None:
        self.book = book
        self.requester = book.institutions[requester_id]
        self.at = at
        self.in_force = book.catalogues_in_force(at)
        self.memo = memo or RecognitionMemo()
        # The catalogues in force and the requester are part of every shared/listing key.
        self._scope = (requester_id, tuple((c.id, c.version) for c in self.in_force))

    def shared(self, issuer: Any, item: Any) -> list[Any]:
        key = (self._scope, issuer.id, item.code)
        found = self.memo.shared.get(key)
        if found is None:
            found = self.memo.shared[key] = [c for c in self.in_force if c.covers(issuer, self.book, item)
                                             and c.covers(self.requester, self.book, item)]
        return found

    def listing(self, issuer: Any, item: Any, components_present: bool) -> list[tuple[Any, Any]]:
        """Shared catalogues that list ``item`` (panels: only when its components are present), narrowest first."""
        key = (self._scope, issuer.id, item.code, components_present)
        found = self.memo.listing.get(key)
        if found is None:
            found = [(c, c.item(item.code)) for c in self.shared(issuer, item)
                     if c.item(item.code) is not None and (components_present or not item.components)]
            found.sort(key=lambda ce: TIERS.index(ce[0].tier))
            self.memo.listing[key] = found
        return found

    def qc_ok(self, issuer: Any, item: Any, required: str | None, on: datetime) -> bool:
        """EQA held on the report date at the required level or higher; ``None`` is a catalogue's QC waiver.

        The certificates that could satisfy (issuer, item, level) are found once; per result only their
        validity dates are compared with the report date.
        """
        if required is None:
            return True
        key = (issuer.id, item.code, required)
        windows = self.memo.qc.get(key)
        if windows is None:
            far = date.max
            windows = self.memo.qc[key] = [(c.valid_from, c.valid_to or far) for c in issuer.qc
                                           if c.satisfies(required, item, c.valid_from)]
        day = on.date()
        return any(start <= day <= end for start, end in windows)

    def __call__(self, prior: Prior) -> Answer:
        return _recognize(self, prior)


def recognize(book: Any, prior: Prior, requester_id: str, at: datetime) -> Answer:
    """Apply the rules to one prior item for ``requester_id`` at ``at``; every status carries its reasons."""
    return Recognizer(book, requester_id, at)(prior)


def _recognize(ctx: Recognizer, prior: Prior) -> Answer:
    book, requester, at = ctx.book, ctx.requester, ctx.at
    if prior.item_code is None or prior.item_code not in book.items:
        return Answer(None, Status.UNMAPPED, reasons=(Reason(
            "出具机构的本地项目编码未映射到统一互认编码，结果仅供查阅，不可互认",
            "the issuer's local item code is not mapped to a unified item code: viewable, never recognizable"),))
    code = prior.item_code
    item = book.items[code]
    if prior.status not in FINAL_STATUSES:
        return Answer(code, Status.NOT_FINAL, reasons=(Reason(
            f"报告状态为“{prior.status}”，仅终审、修订或更正后的报告可互认",
            f"report status is {prior.status!r}; only final, amended or corrected reports are recognizable"),))
    issuer = book.institutions.get(prior.issuer)
    if issuer is None:
        return Answer(code, Status.OUT_OF_SCOPE, reasons=(Reason(
            f"出具机构 {prior.issuer} 不在机构目录中", f"issuer {prior.issuer} is not in the registry"),))
    shared = ctx.shared(issuer, item)
    if not shared:
        return Answer(code, Status.OUT_OF_SCOPE, reasons=(Reason(
            "出具机构与申请机构在检查时刻没有共同适用的互认目录（医联体、市、省、区域或全国）",
            "issuer and requester share no catalogue in force (alliance, city, province, region or national)"),))
    listing = ctx.listing(issuer, item, not item.components or set(item.components) <= prior.report_items)
    if not listing:
        return Answer(code, Status.NOT_IN_CATALOGUE, reasons=(Reason(
            f"共同适用的互认目录（{', '.join(sorted(c.id for c in shared))}）未收录该项目"
            + ("或报告缺少组合项目的组成项" if item.components else ""),
            f"the shared catalogues ({', '.join(sorted(c.id for c in shared))}) do not list this item"
            + (" or the report lacks panel components" if item.components else "")),))
    recognizing: list[tuple[Any, datetime]] = []
    expired: list[datetime] = []
    failures: list[Reason] = []
    qc_failed = grade_failed = False
    for catalogue, entry in listing:
        until = prior.reported_at + timedelta(days=entry.valid_days)
        level = entry.qc_level  # resolved by codes/: the item's, else the catalogue's, else the tier's level
        if not ctx.qc_ok(issuer, item, level, prior.reported_at):
            qc_failed = True
            failures.append(Reason(
                f"{catalogue.id}：出具机构在报告时未持有覆盖该项目的{level}级及以上室间质评合格证书",
                f"{catalogue.id}: the issuer held no {level}-level (or higher) EQA certificate for this item "
                "when it reported"))
            continue
        if not catalogue.grade_allows(requester.grade, issuer.grade):
            grade_failed = True
            failures.append(Reason(
                f"{catalogue.id}：机构等级条件不满足（{issuer.grade} → {requester.grade}）",
                f"{catalogue.id}: grade condition not met ({issuer.grade} → {requester.grade})"))
            continue
        if at > until:
            expired.append(until)
            failures.append(Reason(
                f"{catalogue.id}：已超过互认时限 {entry.valid_days} 天（{until.isoformat()} 到期）",
                f"{catalogue.id}: past its {entry.valid_days}-day window (expired {until.isoformat()})"))
            continue
        recognizing.append((catalogue, until))
    if recognizing:
        narrowest = recognizing[0][0]
        valid_until = max(until for _, until in recognizing)
        zh, en = TIER_NAMES[narrowest.tier]
        return Answer(code, Status.RECOGNIZABLE, narrowest.tier, narrowest.id, narrowest.version, valid_until,
                      via=tuple(c.id for c, _ in recognizing), reasons=(Reason(
                          f"可互认：{zh}互认目录 {narrowest.id}（版本 {narrowest.version}），有效至 {valid_until.isoformat()}",
                          f"recognizable under the {en} catalogue {narrowest.id} (version {narrowest.version}) "
                          f"until {valid_until.isoformat()}"),))
    first = listing[0][0]
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


def items_of(result: Any) -> list[tuple[str | None, frozenset[str]]]:
    """The unified items a stored result speaks for: its own item and each observation's item."""
    present = frozenset(o.unified_code for o in result.observations if o.unified_code)
    codes: list[str | None] = []
    if result.unified_code:
        codes.append(result.unified_code)
    for obs in result.observations:
        if obs.unified_code and obs.unified_code not in codes:
            codes.append(obs.unified_code)
    if not codes:
        codes.append(None)
    return [(c, present) for c in codes]


def best(answers: Iterable[tuple[Answer, Any]]) -> tuple[Answer, Any] | None:
    """Among recognizable answers, the one valid longest (then the most recently reported)."""
    ok = [(a, r) for a, r in answers if a.recognizable]
    if not ok:
        return None
    return max(ok, key=lambda ar: (ar[0].valid_until, ar[1].reported_at))
