"""Report keys and content digests: when a report under a key already accepted is a duplicate, and when it
is a conflict.

Rules implemented (docs/rules.md, "Delivery", "Statuses and versions"):

- The key is the store's natural key (issuer, result ID, version): the result ID is OBR-3, else OBR-2,
  and the version follows from the status and result time (:func:`.oru.report_version`).
- The content is :func:`schemas.content.content_digest` of the event, as the FHIR door and the engine
  compare it too, without the report time when it was not sent (OBR-22 empty: it is then MSH-7, the send
  time). The pseudonym key's ID is kept beside the digest: a digest made under another key is not compared.
- Same key and digest: a duplicate, published again (the store absorbs it) and acknowledged. Same key,
  other digest: a conflict, refused before anything is published — the store would keep the first
  report and drop this one without a word.
"""
from __future__ import annotations

from typing import Any

from adapters.hl7.journal import ReportKey
from schemas.content import content_digest

__all__ = ["content_digest", "report_key"]


def report_key(event: dict[str, Any]) -> ReportKey:
    return event["issuer"], event["result_id"], event["version"]
