"""The benchmarks and the fault suite act as the hospitals' systems: registered clients with bearer tokens,
made in the store the API reads (exchange.auth.accounts), and open encounters for the patients they check."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine


class Clients:
    """A source client per issuing institution and a HIS client per requesting one, created on first use."""

    def __init__(self, database: Engine) -> None:
        self.database = database
        self._tokens: dict[tuple[str, str], str] = {}

    def _token(self, role: str, institution: str) -> str:
        from exchange.auth import accounts

        key = (role, institution)
        if key not in self._tokens:
            client_id = f"bench-{role}-{institution}"
            try:
                secret = accounts.add_client(self.database, client_id, role, institution, client_id)
            except accounts.AccountError:  # an earlier run's client: a new secret
                secret = accounts.rotate_client(self.database, client_id)
            self._tokens[key] = accounts.client_token(self.database, client_id, secret)[1].token
        return self._tokens[key]

    def source(self, institution: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token('source', institution)}"}

    def his(self, institution: str, clinician: str = "bench-clinician") -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token('his', institution)}", "X-HRX-On-Behalf-Of": clinician}


def issuer_of(bundle: dict[str, Any]) -> str:
    """The institution of a Bundle's Organization (the issuer its source client must be bound to)."""
    return next(e["resource"]["identifier"][0]["value"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == "Organization")


def open_encounters(database: Engine, patients: Iterable[str], institution: str) -> None:
    """An open encounter at ``institution`` for each patient: the treatment relationship a check needs."""
    from exchange.auth.relationship import register_encounter

    start = datetime.now(UTC) - timedelta(days=3650)
    with database.begin() as conn:
        for n, patient in enumerate(patients):
            register_encounter(conn, institution=institution, encounter_key=f"BENCH-{patient[:16]}-{n}",
                               patient=patient, department=None, starts_at=start, ends_at=None,
                               registered_by="bench")
