"""Per-caller association limits: one calling AE title, or one source address, holds at most a few of the
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

log = logging.getLogger(__name__)

#: A-ASSOCIATE-RJ result: rejected-transient (PS3.8 Table 9-21).
RESULT_REJECTED_TRANSIENT = 0x02
#: A-ASSOCIATE-RJ source: DICOM UL service-provider (presentation related function).
SOURCE_SERVICE_PROVIDER_PRESENTATION = 0x03
#: A-ASSOCIATE-RJ reason for that source: local-limit-exceeded.
REASON_LOCAL_LIMIT_EXCEEDED = 0x02


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
        assoc.acse.send_reject(RESULT_REJECTED_TRANSIENT, SOURCE_SERVICE_PROVIDER_PRESENTATION,
                               REASON_LOCAL_LIMIT_EXCEEDED)
        # As pynetdicom ends an association it rejected itself: wait until the A-ASSOCIATE-RJ has gone out and
        # the transport is closed (by the caller, or when the ARTIM timer expires).
        assoc.kill()
