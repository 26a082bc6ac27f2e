"""What a hook request says (CDS Hooks 2.0, "Calling a CDS Service" and the hooks' context tables): the patient,
the clinician and, for ``order-select`` / ``order-sign``, the draft orders and the unified items they order.

- The patient: a Patient resource prefetched under ``patient`` whose identifier has the resident ID system
  (``urn:oid:2.16.156.10011.1.3``) is pseudonymized on arrival and never kept; otherwise ``context.patientId``
  must be the exchange's pseudonym. Neither: the data needed is missing (412, as the specification answers a
  service that cannot obtain it).
- The clinician: ``context.userId`` (``Practitioner/<id>``: the id), when the client names none in
  ``X-HRX-On-Behalf-Of``.
- Draft orders: the ``ServiceRequest`` entries of ``context.draftOrders`` (a Bundle); for ``order-select`` only
  those named in ``context.selections``. Each coding is tried in order against the requesting institution's
  mapping table (its local codes, LOINC) and then its imaging mapping table (procedure codes), as results are
  mapped on arrival (:meth:`codes.CodeBook.map_code`); an order none of whose codings maps orders no unified
  item, and gets no card.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from adapters.fhir.identity import RESIDENT_ID_SYSTEMS
from adapters.pseudonymize import Pseudonymizer
from schemas.resident_id import InvalidResidentId

PSEUDONYM = re.compile(r"^[0-9a-f]{64}$")


class HookRequestError(ValueError):
    """A hook request or feedback the service cannot act on: ``field`` at fault, HTTP ``status``."""

    def __init__(self, field: str | None, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


def patient_pseudonym(pseudonymizer: Pseudonymizer, patient_id: Any, prefetched: Any) -> str:
    """The pseudonym of the hook's patient: from the prefetched Patient's resident ID, else ``patientId``."""
    if isinstance(prefetched, dict) and prefetched.get("resourceType") == "Patient":
        identifiers = prefetched.get("identifier")
        for identifier in identifiers if isinstance(identifiers, list) else ():
            if isinstance(identifier, dict) and identifier.get("system") in RESIDENT_ID_SYSTEMS \
                    and identifier.get("value"):
                try:
                    return pseudonymizer.pseudonym(str(identifier["value"]))
                except InvalidResidentId as exc:
                    raise HookRequestError("prefetch.patient.identifier", str(exc)) from None
    if isinstance(patient_id, str) and PSEUDONYM.match(patient_id):
        return patient_id
    raise HookRequestError("context.patientId", "the patient is unknown here: give the exchange's pseudonym as "
                           "patientId (Patient?identifier=urn:oid:2.16.156.10011.1.3|<resident ID> answers it), or "
                           f"prefetch the Patient with its resident ID ({RESIDENT_ID_SYSTEMS[0]})", 412)


def clinician_of(user_id: Any) -> str | None:
    """The clinician ``context.userId`` names (``Practitioner/dr-wang`` → ``dr-wang``), or None."""
    if not isinstance(user_id, str) or not user_id.strip():
        return None
    return user_id.strip().rsplit("/", 1)[-1][:64] or None


@dataclass(frozen=True)
class DraftOrder:
    """A draft ``ServiceRequest``: its id, the codings sent, and the unified item they map to (or None)."""

    order_id: str | None
    codings: tuple[tuple[str | None, str], ...]  # (system, code) as sent
    item_code: str | None

    @property
    def reference(self) -> str | None:
        return f"ServiceRequest/{self.order_id}" if self.order_id else None


def ordered_item(book: Any, institution: str, codings: tuple[tuple[str | None, str], ...]) -> str | None:
    """The unified item the first mappable coding names, through the institution's lab then imaging tables."""
    for system, code in codings:
        mapping = book.map_code(institution, code, system)
        if mapping is not None:
            return str(mapping.unified_code)
    for system, code in codings:
        study = book.map_study(institution, [(code, system)], modality=None, body_part=None, technique=None)
        if study is not None and study.matched_by == "procedure_code":
            return str(study.unified_code)
    return None


def _codings(concept: Any, where: str) -> tuple[tuple[str | None, str], ...]:
    """The (system, code) of a CodeableConcept's codings that have a code."""
    if concept is None:
        return ()
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(concept, dict) or not isinstance(codings or [], list):
        raise HookRequestError(where, "a CodeableConcept: {\"coding\": [{\"system\": …, \"code\": …}]}")
    found = []
    for j, coding in enumerate(codings or ()):
        if not isinstance(coding, dict) or not coding.get("code"):
            continue
        system, code = coding.get("system"), coding["code"]
        if not isinstance(code, str) or not (system is None or isinstance(system, str)):
            raise HookRequestError(f"{where}.coding[{j}]", "system and code are strings")
        found.append((system, code.strip()))
    return tuple(found)


def draft_orders(book: Any, institution: str, bundle: Any, selections: list[str] | None) -> list[DraftOrder]:
    """The draft ServiceRequests of ``draftOrders`` (those in ``selections`` when given), in bundle order."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise HookRequestError("context.draftOrders", "draftOrders must be a FHIR Bundle of the draft orders")
    chosen = set(selections) if selections is not None else None
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise HookRequestError("context.draftOrders.entry", "the Bundle's entries are a list")
    orders = []
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            raise HookRequestError(f"context.draftOrders.entry[{i}]", "an entry without a resource")
        if resource.get("resourceType") != "ServiceRequest":
            continue  # medication and other orders are not tests: no duplicate to find here
        order_id = resource.get("id") if isinstance(resource.get("id"), str) else None
        if chosen is not None and f"ServiceRequest/{order_id}" not in chosen:
            continue
        codings = _codings(resource.get("code"), f"context.draftOrders.entry[{i}].resource.code")
        orders.append(DraftOrder(order_id, codings, ordered_item(book, institution, codings)))
    return orders
