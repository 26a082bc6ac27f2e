"""Re-evaluating stored results after a mapping table (or the items' LOINC column) changed.

Issue rule: an unmapped local code never drops a result, and when a mapping is added or changed the affected
stored results are re-evaluated without the hospital resending them. Every stored event keeps what the
hospital sent (local code and system, and the original value, unit and reference range where a conversion
was applied), so the shared adapter mapping step (``adapters.pipeline``) is simply run again on it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine as Database
from sqlalchemy import or_, select

from adapters.pipeline import (Code, ImagingReport, LabObservation, Patient, ResultPipeline, Study, Value,
                               infer_report_item)
from codes import CodeBook
from schemas.events import parse_timestamp
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


class _NoPseudonyms:
    """Re-evaluation never touches patient identity: the stored pseudonym stays."""

    key_id = "00000000"

    def pseudonym(self, resident_id: str) -> str:  # pragma: no cover - never called
        raise AssertionError("remap must not pseudonymize")


def _code(item: dict[str, Any]) -> Code:
    return Code(item["local_code"], item.get("local_system"), item.get("local_name"))


def remap_event(pipeline: ResultPipeline, event: dict[str, Any]) -> dict[str, Any]:
    """The event as the current code book maps it; identity, values as sent and times are unchanged."""
    issuer = event["issuer"]
    new = dict(event)
    if event["schema"] == "hr.lab-result.v1":
        observations = []
        for obs in event["observations"]:
            sent = obs.get("original") or {"value": obs.get("value"), "unit": obs.get("unit"),
                                           "reference_range": obs.get("reference_range")}
            ref = sent.get("reference_range") or {}
            value = Value(obs["value_type"], sent.get("value"), obs.get("comparator"), obs.get("value_text"),
                          sent.get("unit"), ref.get("low"), ref.get("high"), ref.get("text"),
                          obs.get("interpretation"))
            observations.append(pipeline.observation(issuer, obs["seq"], LabObservation([_code(obs["item"])], value)))
        new["observations"] = observations
        new["item"], _ = pipeline.map_code(issuer, [_code(event["item"])])
        if new["item"]["unified_code"] is None:
            infer_report_item(new)
    else:
        study = event["study"]
        report = ImagingReport(
            institution=issuer, result_id=event["result_id"], version=event["version"], status=event["status"],
            patient=Patient(""), reported_at=parse_timestamp(event["reported_at"]),
            study=Study(study["study_instance_uid"], study["modality"], body_part=study.get("body_part"),
                        technique=study.get("technique"), description=study.get("description")),
            codes=[] if event["item"].get("local_system") == "dicom" else [_code(event["item"])])
        new["item"] = pipeline.imaging_item(report)
    return new


def remap(database: Database, book: CodeBook, *, everything: bool = False, batch: int = 500) -> RemapReport:
    """Re-map stored results whose issuer's mapping table changed since they were stored (or all of them)."""
    pipeline = ResultPipeline(book, _NoPseudonyms())  # type: ignore[arg-type]
    report = RemapReport()
    for issuer in sorted(book.institutions):
        current = book.mapping_version(issuer)
        query = select(Result.id, Result.event).where(Result.issuer == issuer).order_by(Result.id)
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
                    new = remap_event(pipeline, event)
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
            if len(rows) < batch:
                break
    if report.changed:
        log.info("remap: %d of %d examined results re-mapped (%d codes newly mapped)", report.changed,
                 report.examined, report.newly_mapped)
    return report


def _newly_mapped(old: dict[str, Any], new: dict[str, Any]) -> int:
    pairs = [(old["item"], new["item"])] + [(o["item"], n["item"]) for o, n in
                                           zip(old.get("observations") or (), new.get("observations") or ())]
    return sum(1 for a, b in pairs if a.get("unified_code") is None and b.get("unified_code") is not None)
