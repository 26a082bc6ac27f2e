"""What a result event says as its source sent it: the content two deliveries of one report share.

Rule (docs/rules.md, "Delivery" and "Statuses and versions"): under one natural key (issuer, result id,
version) there is one content. Two deliveries of one report differ in what the delivery or the exchange adds,
never in what the sender said, so the content leaves out:

- the event id and the ``source`` block (adapter, message id, receipt time);
- what the code book derives: unified codes, mapping versions and issues (``hrx codes remap`` rewrites stored
  events in place), and unit conversions (a converted value is taken as sent, from ``original``);
- the pseudonym key's id (a pseudonym made under another key differs anyway);
- the offset an instant is written in (instants are compared as instants).

Whatever else an event carries is content, so a field added to the contract counts until it is named here.
"""
from __future__ import annotations

import hashlib
from datetime import UTC
from typing import Any

import orjson

from schemas.events import parse_timestamp

#: Added by the delivery or by the exchange, never by the sender.
DELIVERY_FIELDS = frozenset({"event_id", "source"})
#: What an item says as sent; the rest of an item is the mapping's outcome.
SENT_ITEM_FIELDS = ("local_code", "local_system", "local_name")
#: What a patient block says; ``key_id`` names the key its pseudonym was made under.
SENT_PATIENT_FIELDS = ("pseudonym", "sex", "birth_year")


def _instant(value: Any) -> Any:
    return parse_timestamp(value).astimezone(UTC).isoformat() if isinstance(value, str) else value


def _item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: item.get(name) for name in SENT_ITEM_FIELDS}


def _observation(obs: dict[str, Any]) -> dict[str, Any]:
    content = {key: value for key, value in obs.items() if key != "original"}
    content["item"] = _item(obs["item"])
    sent = obs.get("original")
    if sent:  # converted to the item's unit by the map step: the value, unit and range as reported
        content["value"], content["unit"] = sent.get("value"), sent.get("unit")
        content["reference_range"] = sent.get("reference_range")
    return content


def sent_content(event: dict[str, Any], *, with_reported_at: bool = True) -> dict[str, Any]:
    """The event's content as its source sent it (rule above). ``with_reported_at`` False leaves out the
    report time, for a source whose report time was not sent but taken from the message (HL7 OBR-22 empty)."""
    content = {key: value for key, value in event.items() if key not in DELIVERY_FIELDS}
    content["patient"] = {name: event["patient"].get(name) for name in SENT_PATIENT_FIELDS}
    content["item"] = _item(event["item"])
    if "observations" in event:
        content["observations"] = [_observation(obs) for obs in event["observations"]]
    if isinstance(event.get("study"), dict):
        content["study"] = {**event["study"], "study_at": _instant(event["study"].get("study_at"))}
    for key in ("reported_at", "collected_at"):
        if key in content:
            content[key] = _instant(content[key])
    if not with_reported_at:
        content.pop("reported_at", None)
    return content


def content_digest(event: dict[str, Any], *, with_reported_at: bool = True) -> str:
    """SHA-256 (hex) of :func:`sent_content`: equal for two deliveries of one report, different for another
    content under the same key."""
    content = sent_content(event, with_reported_at=with_reported_at)
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
