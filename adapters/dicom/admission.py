"""Who may associate with the SCP (the door), and per-caller association limits.

The door (docs/rules.md, "Network doors"; the file format is :mod:`adapters.doors`): the SCP publishes for
one institution (its ``--institution``, the issuer of every study it stores), so its callers are the
allow-list's DICOM entries bound to that institution, plus the titles given with ``--allow-ae`` (bound to
it from any address). An association from a calling AE title not among them, or from an address its entry
does not cover, is rejected when its A-ASSOCIATE-RQ arrives: A-ASSOCIATE-RJ, rejected-permanent (1),
DICOM UL service-user (1), calling-AE-title-not-recognized (3) (PS3.8 Table 9-21), and logged with the title
and address. Every instance the SCP stores therefore came through a caller bound to its institution, and is
attributed to it. Without an allow-list and ``--allow-ae`` the door is open (announced with a WARNING).

Limits: one calling AE title, or one source address, holds at most a few of the
SCP's associations, so that a host that opens associations and leaves them idle, or floods the SCP with
them, cannot take every slot from the modalities.

The limits are checked when the A-ASSOCIATE-RQ arrives (pynetdicom's ``EVT_REQUESTED``), before pynetdicom
applies its own checks (calling-AE allow-list, the SCP's global limit). A caller over a limit is answered
A-ASSOCIATE-RJ with result *rejected-transient* (2), source *DICOM UL service-provider, presentation
related function* (3), reason *local-limit-exceeded* (2) (PS3.8 §9.3.4, Table 9-21) — the answer pynetdicom
gives when its global limit is reached — so that the caller tries again later. The transport is then
closed by the caller or, at the latest, when the ARTIM timer (the ACSE timeout) expires, as for any
rejection.

Counted are the associations this guard admitted whose thread is still running: established ones and those
still negotiating. A connection that never sends its A-ASSOCIATE-RQ has no AE title to count; pynetdicom
closes it after the ACSE timeout.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from pynetdicom import evt
from pynetdicom.association import Association

from adapters.doors import AllowList, DicomCaller, peer_address

log = logging.getLogger(__name__)

#: A-ASSOCIATE-RJ result: rejected-transient (PS3.8 Table 9-21).
RESULT_REJECTED_TRANSIENT = 0x02
#: A-ASSOCIATE-RJ source: DICOM UL service-provider (presentation related function).
SOURCE_SERVICE_PROVIDER_PRESENTATION = 0x03
#: A-ASSOCIATE-RJ reason for that source: local-limit-exceeded.
REASON_LOCAL_LIMIT_EXCEEDED = 0x02
#: A-ASSOCIATE-RJ result: rejected-permanent.
RESULT_REJECTED_PERMANENT = 0x01
#: A-ASSOCIATE-RJ source: DICOM UL service-user.
SOURCE_SERVICE_USER = 0x01
#: A-ASSOCIATE-RJ reason for that source: calling-AE-title-not-recognized.
REASON_CALLING_AE_NOT_RECOGNIZED = 0x03


class CallerDoor:
    """The callers of one SCP: allow-list entries bound to ``institution`` and ``allow_ae`` titles (from any
    address); both empty and ``allow`` None: open."""

    def __init__(self, institution: str, allow: AllowList | None = None, allow_ae: tuple[str, ...] = ()) -> None:
        self.institution = institution
        self.allow = allow
        callers = allow.dicom_callers(institution) if allow is not None else ()
        self.callers: tuple[DicomCaller, ...] | None = (
            None if allow is None and not allow_ae
            else callers + tuple(DicomCaller(title.strip(), institution, None, 0) for title in allow_ae))
        #: Where the callers come from (for the log); None when the door is open.
        self.source = " and ".join(([f"allow-list {allow.path}"] if allow is not None else [])
                                   + (["--allow-ae"] if allow_ae else [])) or None
        self.rejected = 0

    def refusal(self, ae_title: str, host: str) -> str | None:
        """Why ``ae_title`` at ``host`` may not associate, or None."""
        if self.callers is None:
            return None
        if not any(c.ae_title == ae_title for c in self.callers):
            return f"calling AE title {ae_title!r} is not on the allow-list for {self.institution}"
        address = peer_address(host)
        if not any(c.covers(ae_title, address) for c in self.callers):
            return f"calling AE title {ae_title!r} is not allowed from address {host}"
        return None


@dataclass
class Admission:
    """The SCP's ``EVT_REQUESTED`` handler: the door first, then the per-caller limits."""

    door: CallerDoor
    limits: CallerLimits

    def on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        ae_title = str(assoc.requestor.primitive.calling_ae_title).strip()  # type: ignore[union-attr]
        reason = self.door.refusal(ae_title, assoc.requestor.address)
        if reason is None:
            self.limits.on_requested(event)
            return
        self.door.rejected += 1
        log.warning("association from %s@%s rejected (calling AE title not recognized): %s", ae_title,
                    assoc.requestor.address, reason)
        reject(assoc, RESULT_REJECTED_PERMANENT, SOURCE_SERVICE_USER, REASON_CALLING_AE_NOT_RECOGNIZED)


def reject(assoc: Association, result: int, source: int, reason: int) -> None:
    """Answer A-ASSOCIATE-RJ and end the association, as pynetdicom ends one it rejected itself: wait until the
    rejection has gone out and the transport is closed (by the caller, or when the ARTIM timer expires)."""
    assoc.acse.send_reject(result, source, reason)
    assoc.kill()


@dataclass
class CallerLimits:
    """At most ``per_ae_title`` concurrent associations per calling AE title and ``per_address`` per source
    address; bind :meth:`on_requested` to ``EVT_REQUESTED``."""

    per_ae_title: int
    per_address: int
    rejected: int = 0
    _admitted: dict[Association, tuple[str, str]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.per_ae_title < 1 or self.per_address < 1:
            raise ValueError("per-caller association limits must be at least 1")

    def admit(self, assoc: Association, ae_title: str, address: str) -> str | None:
        """Count ``assoc`` for its caller and return None, or return why the caller is over a limit."""
        with self._lock:
            for held in [a for a in self._admitted if not a.is_alive()]:
                del self._admitted[held]
            same_title = sum(1 for title, _ in self._admitted.values() if title == ae_title)
            if same_title >= self.per_ae_title:
                return f"calling AE title {ae_title!r} holds {same_title} association(s), its limit"
            same_address = sum(1 for _, host in self._admitted.values() if host == address)
            if same_address >= self.per_address:
                return f"address {address} holds {same_address} association(s), its limit"
            self._admitted[assoc] = (ae_title, address)
            return None

    def held(self) -> dict[str, int]:
        """Associations held now, per calling AE title."""
        with self._lock:
            counts: dict[str, int] = {}
            for assoc, (title, _) in self._admitted.items():
                if assoc.is_alive():
                    counts[title] = counts.get(title, 0) + 1
            return counts

    def on_requested(self, event: evt.Event) -> None:
        """EVT_REQUESTED: admit the association, or reject it (local limit exceeded) and end it."""
        assoc = event.assoc
        ae_title = str(assoc.requestor.primitive.calling_ae_title).strip()  # type: ignore[union-attr]
        address = assoc.requestor.address
        reason = self.admit(assoc, ae_title, address)
        if reason is None:
            return
        self.rejected += 1
        log.warning("association from %s@%s rejected (local limit exceeded): %s", ae_title, address, reason)
        reject(assoc, RESULT_REJECTED_TRANSIENT, SOURCE_SERVICE_PROVIDER_PRESENTATION, REASON_LOCAL_LIMIT_EXCEEDED)
