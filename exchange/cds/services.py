"""The CDS services the exchange offers (CDS Hooks 2.0, "Discovery").

Each service asks the client to prefetch the patient (``Patient/{{context.patientId}}``): a Patient resource that
carries the resident ID (identifier system ``urn:oid:2.16.156.10011.1.3``) lets an EHR call with its own patient
id; without it, ``context.patientId`` must be the exchange's pseudonym (what ``Patient?identifier=`` answers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange.cds.wording import text

PATIENT_PREFETCH_KEY = "patient"
PREFETCH = {PATIENT_PREFETCH_KEY: "Patient/{{context.patientId}}"}


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    message: str  # the key of its title and description in messages.csv (service_<message>_title ...)

    @property
    def trigger(self) -> str:
        """The check this service runs: ``encounter`` (every reusable prior) or ``order`` (per draft order)."""
        return "encounter" if self.hook == "patient-view" else "order"

    def discovery(self, language: str) -> dict[str, Any]:
        return {"hook": self.hook, "id": self.id, "title": text(f"service_{self.message}_title", language),
                "description": text(f"service_{self.message}_description", language), "prefetch": dict(PREFETCH)}


SERVICES: dict[str, Service] = {s.id: s for s in (
    Service("hrx-prior-results", "patient-view", "patient_view"),
    Service("hrx-duplicate-order-select", "order-select", "order_select"),
    Service("hrx-duplicate-order-sign", "order-sign", "order_sign"),
)}
