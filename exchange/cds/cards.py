"""The cards of the CDS services (CDS Hooks 2.0, "CDS Service Response").

An order hook gets one card per draft order whose unified item has a recognizable prior result (the best one:
:func:`exchange.recognize.best`): indicator ``warning``, the summary "近期已有可互认结果" (at most 140 characters,
as the specification requires), the result, its issuer, its report time and valid-until in Beijing time, a
suggestion to delete the draft order (when the order has an id to name), the reason codes of the code book as
``overrideReasons`` (codes/data/reason_codes.csv: the reasons for repeating a test) and an ``absolute`` link to
the result in the web UI. ``patient-view`` gets one ``info`` card per item with a recognizable prior, without
a suggestion. The wording is data (:mod:`exchange.cds.wording`).
"""
from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from codes.calendar import beijing_minute
from exchange.cds.context import DraftOrder
from exchange.cds.wording import text
from exchange.recognize import Answer
from exchange.store import StoredResult

#: The code system of the reason codes offered as ``overrideReasons`` (and expected back in feedback).
REASON_CODE_SYSTEM = "urn:hrx:reason-code"
MAX_SUMMARY = 140  # CDS Hooks 2.0: "summary ... SHALL be <140 characters"
MAX_VALUES = 8  # values listed in a card's detail; the link shows them all


def override_reasons(book: Any, language: str) -> list[dict[str, str]]:
    """The code book's reason codes as Codings, displayed in ``language``."""
    return [{"system": REASON_CODE_SYSTEM, "code": r.code, "display": r.zh if language == "zh" else r.en}
            for r in book.reason_codes.values()]


def result_link(ui_base: str, result: StoredResult) -> str:
    """Where the web UI shows ``result``: ``<ui base>/results/<issuer>/<result id>``."""
    return f"{ui_base.rstrip('/')}/results/{quote(result.issuer, safe='')}/{quote(result.result_id, safe='')}"


def _summary(key: str, language: str, **fields: Any) -> str:
    summary = text(key, language, **fields)
    return summary if len(summary) < MAX_SUMMARY else summary[:MAX_SUMMARY - 2] + "…"


def _name(book: Any, table: str, code: str, language: str) -> str:
    found = getattr(book, table).get(code)
    if found is None:
        return code
    return str(found.name_zh if language == "zh" else found.name_en)


def _number(value: float) -> str:
    return f"{value:g}"


def _values(book: Any, result: StoredResult, item_code: str, language: str) -> str:
    """The item's values (a panel's components too), as ``name value unit``, for lab results."""
    item = book.items.get(item_code)
    wanted = {item_code, *(item.components if item is not None else ())}
    shown = []
    for o in result.observations:
        if o.unified_code not in wanted and result.unified_code != item_code:
            continue
        value = o.value_text if o.value is None else _number(o.value)
        if value is None:
            continue
        name = _name(book, "items", o.unified_code, language) if o.unified_code else o.local_code
        shown.append(" ".join(part for part in (name, value, o.unit) if part))
    if len(shown) > MAX_VALUES:
        shown = [*shown[:MAX_VALUES], "…"]
    return ("；" if language == "zh" else "; ").join(shown)


def _detail(book: Any, answer: Answer, result: StoredResult, item_code: str, language: str) -> str:
    detail = text("order_detail", language, item=_name(book, "items", item_code, language),
                  issuer=_name(book, "institutions", result.issuer, language),
                  reported=beijing_minute(result.reported_at),
                  valid_until=beijing_minute(answer.valid_until) if answer.valid_until else "—")
    values = _values(book, result, item_code, language) if result.kind == "lab" else ""
    return f"{detail}\n\n{text('values', language, values=values)}" if values else detail


def card(book: Any, answer: Answer, result: StoredResult, *, language: str, ui_base: str,
         order: DraftOrder | None) -> dict[str, Any]:
    """The card for one recognizable prior (``order``: the draft order it duplicates; None for patient-view)."""
    item_code = answer.item_code or ""
    item = _name(book, "items", item_code, language)
    issued: dict[str, Any] = {"uuid": str(uuid.uuid4())}
    if order is None:
        issued.update(summary=_summary("encounter_summary", language, item=item,
                                       issuer=_name(book, "institutions", result.issuer, language)),
                      indicator="info")
    else:
        issued.update(summary=_summary("order_summary", language, item=item), indicator="warning")
    issued["detail"] = _detail(book, answer, result, item_code, language)
    issued["source"] = {"label": text("source_label", language)}
    if order is not None and order.reference is not None:
        issued["suggestions"] = [{"label": text("suggestion_label", language), "uuid": str(uuid.uuid4()),
                                  "isRecommended": True,
                                  "actions": [{"type": "delete", "resourceId": order.reference,
                                               "description": text("delete_description", language,
                                                                   order=order.reference)}]}]
        issued["selectionBehavior"] = "at-most-one"
    issued["overrideReasons"] = override_reasons(book, language)
    issued["links"] = [{"label": text("link_label", language), "url": result_link(ui_base, result),
                        "type": "absolute"}]
    return issued
