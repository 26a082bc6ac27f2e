"""The authenticated caller of a request: who, in which role, for which institution or scope."""
from __future__ import annotations

from dataclasses import dataclass

from exchange.audit import Actor


@dataclass(frozen=True)
class Principal:
    """A logged-in person, an authenticated hospital system or a patient.

    ``id`` is the account name, the client id, or (patients) the pseudonym. ``scope`` is an operator's or an
    auditor's: ``national``, a region, alliance, province/city code or an institution id (the same values as
    the statistics' ``scope``). ``on_behalf_of`` is the clinician a ``his`` client names on a call.
    """

    id: str
    role: str
    institution: str | None = None
    department: str | None = None
    scope: str | None = None
    name: str | None = None
    on_behalf_of: str | None = None

    def actor(self, purpose: str, *, break_glass: bool = False) -> Actor:
        """This principal as the audit records it."""
        return Actor(user=self.id, institution=self.institution, purpose=purpose, role=self.role,
                     department=self.department, on_behalf_of=self.on_behalf_of, break_glass=break_glass)
