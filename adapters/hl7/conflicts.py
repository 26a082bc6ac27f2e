"""Report keys and content digests: when a report under a key already accepted is a duplicate, and when it
is a conflict.

Rules implemented (docs/rules.md, "Delivery", "Statuses and versions"):

- The key is the store's natural key (issuer, result ID, version): the result ID is OBR-3, else OBR-2,
  and the version follows from the status and result time (:func:`.oru.report_version`).
- The content is the event as the sender determined it. Left out, because they vary between deliveries
  of one report: the event ID, the source (adapter, MSH-10, receipt time), the report time when it was
  not sent (OBR-22 empty: it is then MSH-7, the send time), what the code book derives (unified codes,
  mapping versions and issues) and unit conversions (the values and units as sent are digested instead),
  and the pseudonym key's ID (kept beside the digest: a digest made under another key is not compared).
- Same key and digest: a duplicate, published again (the store absorbs it) and acknowledged. Same key,
  other digest: a conflict, refused before anything is published — the store would keep the first
  report and drop this one without a word.
"""
from __future__ import annotations

import hashlib
from typing import Any

import orjson

from adapters.hl7.journal import ReportKey

_VOLATILE = ("event_id", "source", "item", "observations", "patient", "reported_at")


def report_key(event: dict[str, Any]) -> ReportKey:
    return event["issuer"], event["result_id"], event["version"]


def _item(item: dict[str, Any]) -> dict[str, Any]:
    return {"local_code": item["local_code"], "local_system": item.get("local_system"),
            "local_name": item.get("local_name")}


def _observation(obs: dict[str, Any]) -> dict[str, Any]:
    sent = obs.get("original") or obs  # the value, unit and range as reported, before any conversion
    return {"seq": obs["seq"], "item": _item(obs["item"]), "value_type": obs["value_type"],
            "value": sent.get("value"), "unit": sent.get("unit"), "reference_range": sent.get("reference_range"),
            "comparator": obs.get("comparator"), "value_text": obs.get("value_text"),
            "value_date": obs.get("value_date"), "interpretation": obs.get("interpretation")}


def content_digest(event: dict[str, Any], result_time_sent: bool = True) -> str:
    """SHA-256 (hex) of a lab event's content: what the sender said, without what varies per delivery.

    The event holds the patient's pseudonym, never the resident ID, so the digest needs no key.
    ``result_time_sent`` False: the report time is the message's send time (MSH-7) and is left out.
    """
    patient = event["patient"]
    content = {key: value for key, value in event.items() if key not in _VOLATILE}
    content["patient"] = {"pseudonym": patient["pseudonym"], "sex": patient.get("sex"),
                          "birth_year": patient.get("birth_year")}
    content["item"] = _item(event["item"])
    content["observations"] = [_observation(o) for o in event.get("observations", ())]  # imaging: none
    if result_time_sent:
        content["reported_at"] = event["reported_at"]
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
