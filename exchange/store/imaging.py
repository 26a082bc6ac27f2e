"""One imaging result from two doors: the DICOM images and the report sent by HL7 v2 or FHIR.

Rule implemented (docs/rules.md, "Statuses and versions"): an imaging result is keyed by issuer + accession
number + version whatever door it came by. A version *with images* (a retrieval pointer or an instance count:
the DICOM study, or a FHIR ImagingStudy) owns the study metadata and the retrieval pointer; a version *without
images* (a report: HL7 ORU, FHIR DiagnosticReport) owns the status and the report text. When both exist the
store joins them, whichever arrived first:

- a report stored after the images takes the images' study block (their values win; the report's fill what the
  images lack, e.g. the accession number) and retrieval pointer;
- images stored after a report give every stored version without images the same, in place: the report's text,
  status and version are kept, so a final report stays the final head.
"""
from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, select, tuple_

from exchange.store import write
from exchange.store.models import Result

IMAGING_SCHEMA = "hr.imaging-result.v1"


def has_images(event: dict[str, Any]) -> bool:
    """Whether a version came with images: a retrieval pointer or a counted study."""
    study = event.get("study") or {}
    return bool(event.get("retrieval")) or study.get("instance_count") is not None


def with_images(event: dict[str, Any], images: dict[str, Any]) -> dict[str, Any]:
    """``event`` (a report) with the study block and retrieval pointer of ``images``."""
    study = {key: value for key, value in (event.get("study") or {}).items() if value is not None}
    study.update({key: value for key, value in images["study"].items() if value is not None})
    return {**event, "study": study, "retrieval": event.get("retrieval") or images.get("retrieval")}


def join_images_and_reports(conn: Connection, rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """Join the imaging versions of a batch with the stored versions of the same results, before they are written.

    ``rows`` and ``events`` are the batch's ``results`` rows and their events, in the same order; a report row
    gains the images' study and retrieval (its ``event`` column is serialized again), and stored versions
    without images gain those of the batch's images.
    """
    imaging = [i for i, event in enumerate(events) if event["schema"] == IMAGING_SCHEMA]
    if not imaging:
        return
    keys = {(events[i]["issuer"], events[i]["result_id"]) for i in imaging}
    stored = conn.execute(select(Result.id, Result.issuer, Result.result_id, Result.event)
                          .where(Result.kind == "imaging", tuple_(Result.issuer, Result.result_id).in_(keys))).all()
    images: dict[tuple[str, str], dict[str, Any]] = {}
    reports: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for pk, issuer, result_id, text in stored:
        event = orjson.loads(text)
        if has_images(event):
            images.setdefault((issuer, result_id), event)
        else:
            reports.setdefault((issuer, result_id), []).append((pk, event))
    for i in imaging:  # the batch's own images first, so a report in the same batch is joined too
        key = (events[i]["issuer"], events[i]["result_id"])
        if has_images(events[i]):
            images.setdefault(key, events[i])
    for i in imaging:
        event = events[i]
        key = (event["issuer"], event["result_id"])
        if key not in images:
            continue
        if not has_images(event):
            events[i] = with_images(event, images[key])
            rows[i]["event"] = orjson.dumps(events[i]).decode()
        elif images[key] is event:
            joined = [{"id": pk, "event": orjson.dumps(with_images(report, event)).decode()}
                      for pk, report in reports.pop(key, ())]
            if joined:
                write.update(conn, Result.__table__, joined, key=("id",))
