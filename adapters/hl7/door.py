"""The MLLP listener's door: which addresses may connect, and under which sending facility (MSH-4) each may
send (docs/rules.md, "Network doors"; the file format is :mod:`adapters.doors`).

Rules implemented:

- A listener publishes for one institution (its ``--institution``, the issuer of every result); only the
  allow-list's HL7 senders bound to that institution are its callers. A connection from any other address is
  closed before anything is read (:meth:`Hl7Door.admits`, used by :class:`adapters.hl7.mllp.MLLPServer`).
- A message whose MSH-4 (namespace ID or universal ID) is not one of the facility ids bound to the sender's
  address for that institution — the institution id itself always is — is refused with AR, ERR-3 103 at
  MSH-4, and nothing of it is published: a sender publishes results only as its own institution.
- Without an allow-list the door is open (any address, any MSH-4 the ``--facility`` pin allows): kept for
  development and demos, announced with a WARNING when the listener starts.
"""
from __future__ import annotations

from adapters.doors import AllowList, Hl7Sender, peer_address
from adapters.hl7.exceptions import Hl7Error
from adapters.hl7.header import Header


class Hl7Door:
    """The allow-list entries of one MLLP listener (those bound to its institution); ``allow=None``: open."""

    def __init__(self, institution: str, allow: AllowList | None) -> None:
        self.institution = institution
        self.allow = allow
        self.senders: tuple[Hl7Sender, ...] | None = None if allow is None else allow.hl7_senders(institution)

    @property
    def open(self) -> bool:
        return self.senders is None

    def admits(self, host: str) -> bool:
        """Whether a connection from ``host`` is served at all."""
        if self.senders is None:
            return True
        address = peer_address(host)
        return any(s.covers(address) for s in self.senders)

    def check(self, header: Header, host: str) -> None:
        """Refuse (Hl7Error, AR) a message whose MSH-4 is not bound to the sender's address for this institution."""
        if self.senders is None:
            return
        address = peer_address(host)
        if any(header.facility_ids & s.facilities for s in self.senders if s.covers(address)):
            return
        raise Hl7Error(f"MSH-4 (sending facility) {header.sending_facility or '(empty)'} is not bound to this "
                       f"sender's address for institution {self.institution}: a sender publishes results only as "
                       "its own institution (the exchange's allow-list)", "MSH^1^4", "103", reject=True)
