"""Pull studies from a PACS: C-FIND (Study Root) from a watermark, C-MOVE each new study to our own storage SCP.

The C-MOVE destination is the SCP run inside the pull process (the same handler, spool and assembler as
``hrx adapter dicom-scp``), so pulled instances follow exactly the received instances' path: metadata only,
durable spool, duplicate SOP Instance UIDs absorbed, studies published once stable. The PACS must know the
puller's AE title, host and port (e.g. Orthanc's ``DicomModalities``); the SCP only accepts associations
from the PACS's AE title.

Watermark (resuming after a restart): ``{"date": YYYYMMDD, "done": {StudyInstanceUID: StudyDate}}`` in the
spool's state table (SQLite, synchronous=FULL — committed before the next study is fetched). Each run asks
for ``StudyDate >= date - lookback_days`` (default 1: studies that reach the PACS a day late); studies
already ``done`` are skipped. A study reaching the PACS later than that with an older StudyDate is missed
(a StudyDate watermark cannot see it; run once with an earlier ``--since`` and a fresh spool to backfill). A study counts as done once its C-MOVE
finished and none of its instances was refused as *retryable* (0xA700); instances refused as unusable
(0xA900/0xCxxx) are final and reported, and such a study is not retried (what arrived is published). The watermark only advances past a date once every study on or
before it is done, so a failed study is retried on the next run; ``done`` is pruned below the look-back.
Studies without a StudyDate never match a date range and are not pulled.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from adapters.dicom.scp import DicomReceiver

log = logging.getLogger(__name__)


class PullError(RuntimeError):
    """The PACS could not be queried (association refused, C-FIND failed)."""


@dataclass
class PullSummary:
    found: int = 0
    skipped: int = 0
    retrieved: int = 0
    failed: list[str] = field(default_factory=list)
    unusable_instances: int = 0
    watermark: str | None = None

    def lines(self) -> list[str]:
        out = [f"C-FIND: {self.found} study(ies) since the watermark, {self.skipped} already pulled",
               f"retrieved {self.retrieved} study(ies); {self.unusable_instances} instance(s) refused as unusable"]
        if self.failed:
            out.append(f"{len(self.failed)} study(ies) not retrieved, retried next run: {', '.join(self.failed)}")
        out.append(f"watermark: StudyDate >= {self.watermark}")
        return out


@dataclass
class Puller:
    receiver: DicomReceiver  # started; its AE title is the C-MOVE destination
    pacs_host: str
    pacs_port: int
    pacs_ae: str
    since: date
    lookback_days: int = 1
    timeout: float = 60.0

    @property
    def state_name(self) -> str:
        return f"pull:{self.pacs_ae}@{self.pacs_host}:{self.pacs_port}"

    def _state(self) -> dict:  # type: ignore[type-arg]
        state = self.receiver.spool.get_state(self.state_name)
        if state is None:
            state = {"date": self.since.strftime("%Y%m%d"), "done": {}}
        return state

    def _associate(self, context: str):  # type: ignore[no-untyped-def]
        ae = AE(ae_title=self.receiver.config.ae_title)
        ae.maximum_pdu_size = self.receiver.config.max_pdu
        ae.acse_timeout = ae.network_timeout = self.timeout
        ae.dimse_timeout = self.timeout * 10
        ae.add_requested_context(context)
        assoc = ae.associate(self.pacs_host, self.pacs_port, ae_title=self.pacs_ae)
        if not assoc.is_established:
            raise PullError(f"PACS {self.pacs_ae}@{self.pacs_host}:{self.pacs_port} refused or did not answer "
                            "the association")
        return assoc

    def find(self, from_date: str) -> list[tuple[str, str, str]]:
        """(StudyInstanceUID, StudyDate, StudyTime) of the studies with StudyDate >= ``from_date``."""
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyDate = f"{from_date}-"
        query.StudyTime = ""
        query.StudyInstanceUID = ""
        found = []
        assoc = self._associate(StudyRootQueryRetrieveInformationModelFind)
        try:
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                code = status.get("Status") if status else None
                if code is None:
                    raise PullError("C-FIND: no response from the PACS (timeout or aborted)")
                if code in (0xFF00, 0xFF01) and identifier is not None:
                    uid = str(identifier.get("StudyInstanceUID") or "")
                    if uid:
                        found.append((uid, str(identifier.get("StudyDate") or ""),
                                      str(identifier.get("StudyTime") or "")))
                elif code != 0x0000:
                    raise PullError(f"C-FIND failed with status 0x{code:04X}")
        finally:
            assoc.release()
        return sorted(found, key=lambda s: (s[1], s[2], s[0]))

    def move(self, study_uid: str) -> tuple[bool, int]:
        """C-MOVE one study to our SCP; (done, unusable instance count)."""
        stats = self.receiver.handler.stats
        stats.by_study.pop(study_uid, None)
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        final = None
        assoc = self._associate(StudyRootQueryRetrieveInformationModelMove)
        try:
            for status, _ in assoc.send_c_move(query, self.receiver.config.ae_title,
                                               StudyRootQueryRetrieveInformationModelMove):
                if status is None or "Status" not in status:
                    break
                if status.Status != 0xFF00:
                    final = status
                    log.debug("C-MOVE final response for %s: %s", study_uid, status)
        finally:
            assoc.release()
        counts = stats.by_study.pop(study_uid, {})
        unusable = counts.get("failed", 0)
        if final is None:
            log.warning("C-MOVE of study %s: no final response", study_uid)
            return False, unusable
        code = int(final.Status)
        if counts.get("refused"):
            log.warning("C-MOVE of study %s: %d instance(s) refused as retryable", study_uid, counts["refused"])
            return False, unusable
        failed_subops = int(final.get("NumberOfFailedSuboperations") or 0)
        if code == 0x0000 or unusable:
            # Everything stored — or our SCP refused instances as unusable, which no retry changes (PACS such as
            # Orthanc then end the move with 0xC000 and may skip the study's remaining instances).
            return True, unusable
        log.warning("C-MOVE of study %s ended with status 0x%04X (%d sub-operation(s) failed)", study_uid, code,
                    failed_subops)
        return False, unusable

    def run_once(self) -> PullSummary:
        state = self._state()
        done: dict[str, str] = state["done"]
        floor = (datetime.strptime(state["date"], "%Y%m%d") - timedelta(days=self.lookback_days)).strftime("%Y%m%d")
        studies = self.find(floor)
        summary = PullSummary(found=len(studies))
        pending_dates: list[str] = []
        for uid, day, _ in studies:
            if uid in done:
                summary.skipped += 1
                continue
            ok, unusable = self.move(uid)
            summary.unusable_instances += unusable
            if ok:
                summary.retrieved += 1
                done[uid] = day
            else:
                summary.failed.append(uid)
                pending_dates.append(day)
            self.receiver.spool.set_state(self.state_name, state)  # resume here after a crash
        dates = [d for _, d, _ in studies if d]
        if pending_dates:
            state["date"] = max(state["date"], min(pending_dates))
        elif dates:
            state["date"] = max(state["date"], max(dates))
        next_floor = (datetime.strptime(state["date"], "%Y%m%d")
                      - timedelta(days=self.lookback_days)).strftime("%Y%m%d")
        state["done"] = {u: d for u, d in done.items() if d >= next_floor}
        self.receiver.spool.set_state(self.state_name, state)
        summary.watermark = state["date"]
        return summary
