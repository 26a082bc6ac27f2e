"""Re-evaluating stored results after a mapping table (or the items' LOINC column) changed.

An unmapped local code never drops a result, and when a mapping is added or changed the affected stored
results are re-evaluated without the hospital resending them. Every stored event keeps what the hospital sent
(local code and system, and the original value, unit and reference range where a conversion was applied), so
the map step of ingest (``codes.mapping``) simply runs again on it. Patient identity is never touched: the
stored pseudonym stays.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine as Database
from sqlalchemy import or_, select

from adapters.report import Code, Study, Value
from codes import CodeBook
from codes.mapping import imaging_item, infer_report_item, map_code, map_observation
from exchange.store.models import Observation, Result
from exchange.store import write
from exchange.store.results import observation_rows

log = logging.getLogger(__name__)


@dataclass
class RemapReport:
    examined: int = 0
    changed: int = 0
    newly_mapped: int = 0  # observations or imaging items that had no unified code and now have one
    by_issuer: dict[str, int] = field(default_factory=dict)


def _code(item: dict[str, Any]) -> Code:
    """The code as the hospital sent it, from a stored event's item."""
    return Code(item["local_code"], item.get("local_system"), item.get("local_name"))


def _value_as_sent(obs: dict[str, Any]) -> Value:
    """A stored observation's value as the hospital sent it (before any unit conversion)."""
    sent = obs.get("original") or {"value": obs.get("value"), "unit": obs.get("unit"),
                                   "reference_range": obs.get("reference_range")}
    ref = sent.get("reference_range") or {}
    return Value(obs["value_type"], sent.get("value"), obs.get("comparator"), obs.get("value_text"), sent.get("unit"),
                 ref.get("low"), ref.get("high"), ref.get("text"), obs.get("interpretation"), obs.get("value_date"))


def remap_event(book: CodeBook, event: dict[str, Any]) -> dict[str, Any]:
    """The event as the current code book maps it; identity, values as sent and times are unchanged."""
    issuer = event["issuer"]
    new = dict(event)
    if event["schema"] == "hr.lab-result.v1":
        observations = [map_observation(book, issuer, obs["seq"], [_code(obs["item"])], _value_as_sent(obs))
                        for obs in event["observations"]]
        item, _ = map_code(book, issuer, [_code(event["item"])])
        new["observations"] = observations
        new["item"] = infer_report_item(item, observations)
    else:
        study = event["study"]
        # A study mapped by its shape has no procedure code: its local code is the shape itself.
        codes = [] if event["item"].get("local_system") == "dicom" else [_code(event["item"])]
        shape = Study(study["study_instance_uid"], study["modality"], body_part=study.get("body_part"),
                      technique=study.get("technique"), description=study.get("description"),
                      requested_procedure=study.get("requested_procedure"))
        new["item"] = imaging_item(book, issuer, codes, shape)
    return new


def remap(database: Database, book: CodeBook, *, everything: bool = False, batch: int = 500,
          progress: Callable[[int], None] | None = None) -> RemapReport:
    """Re-map stored results whose issuer's mapping table changed since they were stored (or all of them): lab
    results against the issuer's lab table version, imaging results against its imaging table version.
    ``progress`` is called with the results examined in each batch."""
    report = RemapReport()
    for issuer in sorted(book.institutions):
        for kind, current in (("lab", book.mapping_version(issuer)),
                              ("imaging", book.imaging_mapping_version(issuer))):
            _remap_kind(database, book, issuer, kind, current, everything, batch, report, progress)
    if report.changed:
        log.info("remap: %d of %d examined results re-mapped (%d codes newly mapped)", report.changed,
                 report.examined, report.newly_mapped)
    return report


def _remap_kind(database: Database, book: CodeBook, issuer: str, kind: str, current: str | None, everything: bool,
                batch: int, report: RemapReport, progress: Callable[[int], None] | None) -> None:
    """One issuer's results of one kind (``lab`` or ``imaging``), in batches of ``batch`` per transaction."""
    query = (select(Result.id, Result.event).where(Result.issuer == issuer, Result.kind == kind)
             .order_by(Result.id))
    if not everything:
        query = query.where(or_(Result.mapping_version.is_(None), Result.mapping_version != current)
                            if current is not None else Result.mapping_version.is_not(None))
    last = 0
    while True:
        with database.begin() as conn:
            rows = conn.execute(query.where(Result.id > last).limit(batch)).all()
            for pk, raw in rows:
                last = pk
                report.examined += 1
                event = orjson.loads(raw)
                new = remap_event(book, event)
                new["item"]["mapping_version"] = current
                for obs in new.get("observations") or ():
                    obs["item"]["mapping_version"] = current
                report.newly_mapped += _newly_mapped(event, new)
                if new == event:
                    write.update(conn, Result.__table__, [{"id": pk, "mapping_version": current}], key=("id",))
                    continue
                report.changed += 1
                report.by_issuer[issuer] = report.by_issuer.get(issuer, 0) + 1
                write.update(conn, Result.__table__, [{
                    "id": pk, "unified_code": new["item"]["unified_code"], "mapping_version": current,
                    "event": orjson.dumps(new).decode()}], key=("id",))
                if new.get("observations") is not None:
                    write.delete(conn, Observation.__table__, [{"result_pk": pk}])
                    write.insert(conn, Observation.__table__, observation_rows(pk, new))
        if progress is not None and rows:
            progress(len(rows))
        if len(rows) < batch:
            break


def _newly_mapped(old: dict[str, Any], new: dict[str, Any]) -> int:
    pairs = [(old["item"], new["item"])] + [(o["item"], n["item"]) for o, n in
                                           zip(old.get("observations") or (), new.get("observations") or ())]
    return sum(1 for a, b in pairs if a.get("unified_code") is None and b.get("unified_code") is not None)
