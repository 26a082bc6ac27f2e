"""Pull studies from a PACS: C-FIND (Study Root) from a watermark, C-MOVE each new study to our own storage SCP.

The C-MOVE destination is the SCP run inside the pull process (the same handler, spool and assembler as
``hrx adapter dicom-scp``), so pulled instances follow exactly the received instances' path: metadata only,
durable spool, duplicate SOP Instance UIDs absorbed, studies published once stable. The PACS must know the
puller's AE title, host and port (e.g. Orthanc's ``DicomModalities``); the SCP only accepts associations
from the PACS's AE title.

Finding studies. Each run asks at STUDY level for ``StudyDate >= watermark - lookback_days`` (range
matching, PS3.4 C.2.2.2.5; default look-back 1 day: studies that reach the PACS a day late). StudyDate is
Type 2 — present, possibly empty — and a study without one never matches a range. The standard's query for
exactly those, Empty Value Matching (a key of two QUOTATION MARKs, PS3.4 C.2.2.2.7), is optional and
Orthanc answers it with no match; universal matching (an empty key, PS3.4 C.2.2.2.3) returns every study
the PACS holds, unbounded. So a second C-FIND asks at SERIES level for ``SeriesDate >=`` the same floor,
with StudyInstanceUID and StudyDate as return keys, and keeps the studies whose StudyDate came back empty:
bounded by the same look-back. Their key date is their latest SeriesDate found; elsewhere they are handled
as the dated ones. Without a StudyInstanceUID this SERIES-level query is relational (the extended SCU
behaviour of PS3.4 C.4.1.2.2, not negotiated here): Orthanc and most archives answer it; a PACS that refuses
it is reported in the run's summary and the dated pull goes on. A study with neither StudyDate nor
SeriesDate, or reaching the PACS later than the look-back with an older date, is not found (run once with an
earlier ``--since`` and a fresh spool to backfill).

Done, retried, given up (:mod:`adapters.dicom.pull_state`, in the spool's state table, SQLite
synchronous=FULL, committed after every study). A study is done once its C-MOVE ended with success and our
SCP refused none of its instances. Otherwise — no final C-MOVE response, a failure or partial status, an
instance refused as retryable (0xA700) or as unusable (0xA900/0xCxxx, e.g. no resident ID, which the
hospital may correct in its PACS) — what arrived is published anyway and the study is retried by its
StudyInstanceUID on a later run, whether or not a C-FIND still finds it, with a back-off
(:class:`~adapters.dicom.pull_state.RetryPolicy`); after its last attempt it is given up and listed with
the reason (``hrx adapter dicom-pull --status``), never dropped silently. Failed studies do not hold the
watermark: it advances to the latest key date found, never past today's Beijing date (docs/rules.md,
"Dates"), and ``done`` is pruned below the next run's look-back.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from adapters.dicom.pull_state import GivenUp, PullState, RetryPolicy, days_before, state_name
from adapters.dicom.scp import DicomReceiver, StoreHandler
from codes.calendar import beijing_now

log = logging.getLogger(__name__)

#: ``progress(studies moved, studies to move)``, called before the first C-MOVE and after each one.
Progress = Callable[[int, int], None]


class PullError(RuntimeError):
    """The PACS could not be queried (association refused, C-FIND failed)."""


@dataclass(frozen=True)
class FoundStudy:
    """A study to pull: its key date is its StudyDate, or (``undated``) its latest SeriesDate found."""

    uid: str
    key_date: str
    time: str = ""
    undated: bool = False


@dataclass(frozen=True)
class MoveOutcome:
    done: bool
    unusable: int = 0  # instances our SCP refused as unusable (0xA900/0xCxxx)
    reason: str | None = None  # why the study is not done
    pacs_problem: bool = False  # the transfer failed (rather than the study's content being refused)


@dataclass
class Refusals:
    """The storage handler of a pulling SCP: notes the status and ErrorComment of each instance it refuses.

    One C-MOVE runs at a time and the SCP accepts only the PACS, so the refusals noted during a C-MOVE are
    that study's. The comments are the handler's own, scrubbed of resident IDs.
    """

    handler: StoreHandler
    noted: list[str] = field(default_factory=list)

    @property
    def stats(self):  # type: ignore[no-untyped-def]
        return self.handler.stats

    def __call__(self, event: evt.Event) -> Dataset | int:
        answer = self.handler(event)
        if isinstance(answer, Dataset) and int(answer.Status) != 0x0000:
            self.noted.append(f"0x{int(answer.Status):04X} {answer.get('ErrorComment') or ''}".strip())
        return answer


@dataclass
class PullSummary:
    found: int = 0
    found_undated: int = 0
    skipped: int = 0
    retrieved: int = 0
    retried: int = 0  # of ``retrieved``: studies that had failed before
    failed: dict[str, str] = field(default_factory=dict)  # study → reason, retried later
    pacs_problems: int = 0  # of ``failed`` and ``given_up``: transfers that failed
    given_up: dict[str, str] = field(default_factory=dict)  # given up in this run
    waiting: int = 0  # failed before, next attempt not yet due
    skipped_given_up: int = 0  # found again, given up earlier
    unusable_instances: int = 0
    undated_searched: bool = False
    undated_error: str | None = None  # the SERIES-level C-FIND failed
    floor: str | None = None
    watermark: str | None = None

    def lines(self) -> list[str]:
        undated = (f"{self.found_undated} without StudyDate (SeriesDate >= {self.floor})" if self.undated_searched
                   else "studies without StudyDate not searched")
        out = [f"C-FIND: {self.found} study(ies) since the watermark (StudyDate >= {self.floor}), {undated}, "
               f"{self.skipped} already pulled",
               f"retrieved {self.retrieved} study(ies)" + (f" ({self.retried} on a retry)" if self.retried else "")
               + f"; {self.unusable_instances} instance(s) refused as unusable"]
        if self.undated_error:
            out.append(f"studies without StudyDate not searched: {self.undated_error}")
        if self.failed:
            out.append(f"{len(self.failed)} study(ies) not retrieved, to retry: "
                       + "; ".join(f"{uid} ({reason})" for uid, reason in self.failed.items()))
        if self.given_up:
            out.append(f"{len(self.given_up)} study(ies) given up after their last attempt: "
                       + "; ".join(f"{uid} ({reason})" for uid, reason in self.given_up.items()))
        if self.waiting or self.skipped_given_up:
            out.append(f"{self.waiting} study(ies) wait for their next attempt, {self.skipped_given_up} found again "
                       "but given up earlier (listed by --status)")
        out.append(f"watermark: StudyDate >= {self.watermark}")
        return out


@dataclass
class Puller:
    """Build it before starting ``receiver``: it wraps the receiver's storage handler in :class:`Refusals`."""

    receiver: DicomReceiver  # its AE title is the C-MOVE destination
    pacs_host: str
    pacs_port: int
    pacs_ae: str
    since: date
    lookback_days: int = 1
    timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    find_undated: bool = True
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if not isinstance(self.receiver.handler, Refusals):
            self.receiver.handler = Refusals(self.receiver.handler)  # type: ignore[assignment]

    @property
    def state_name(self) -> str:
        return state_name(self.pacs_ae, self.pacs_host, self.pacs_port)

    def state(self) -> PullState:
        stored = self.receiver.spool.get_state(self.state_name)
        return PullState.from_json(stored) if stored else PullState(self.since.strftime("%Y%m%d"))

    def _save(self, state: PullState) -> None:
        self.receiver.spool.set_state(self.state_name, state.to_json())

    def _associate(self, context: str) -> Association:
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

    def _find(self, query: Dataset) -> list[Dataset]:
        """The identifiers of the pending C-FIND responses; PullError on a failure status or no answer."""
        found = []
        assoc = self._associate(StudyRootQueryRetrieveInformationModelFind)
        try:
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                code = status.get("Status") if status else None
                if code is None:
                    raise PullError("C-FIND: no response from the PACS (timeout or aborted)")
                if code in (0xFF00, 0xFF01):
                    if identifier is not None:
                        found.append(identifier)
                elif code != 0x0000:
                    raise PullError(f"C-FIND at {query.QueryRetrieveLevel} level failed with status 0x{code:04X}")
        finally:
            assoc.release()
        return found

    def find(self, from_date: str) -> list[FoundStudy]:
        """The studies with StudyDate >= ``from_date`` (STUDY level, range matching)."""
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyDate = f"{from_date}-"
        query.StudyTime = ""
        query.StudyInstanceUID = ""
        studies = []
        for identifier in self._find(query):
            uid = str(identifier.get("StudyInstanceUID") or "")
            if uid:
                studies.append(FoundStudy(uid, str(identifier.get("StudyDate") or ""),
                                          str(identifier.get("StudyTime") or "")))
        return sorted(studies, key=lambda s: (s.key_date, s.time, s.uid))

    def find_without_study_date(self, from_date: str) -> list[FoundStudy]:
        """The studies with an empty StudyDate and a series with SeriesDate >= ``from_date`` (SERIES level).

        A series whose answer lacks the StudyDate element is not taken for undated: a PACS that does not
        return study attributes at SERIES level tells nothing about them.
        """
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.SeriesDate = f"{from_date}-"
        query.StudyDate = ""
        query.StudyInstanceUID = ""
        query.SeriesInstanceUID = ""
        latest: dict[str, str] = {}
        for identifier in self._find(query):
            uid = str(identifier.get("StudyInstanceUID") or "")
            series_date = str(identifier.get("SeriesDate") or "")
            if uid and series_date and "StudyDate" in identifier and not str(identifier.StudyDate or "").strip():
                latest[uid] = max(latest.get(uid, ""), series_date)
        return sorted((FoundStudy(uid, day, undated=True) for uid, day in latest.items()),
                      key=lambda s: (s.key_date, s.uid))

    def move(self, study_uid: str) -> MoveOutcome:
        """C-MOVE one study to our SCP and judge whether it is done."""
        handler = self.receiver.handler
        stats = handler.stats
        stats.by_study.pop(study_uid, None)
        notes = handler.noted if isinstance(handler, Refusals) else []
        notes.clear()
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
        if counts.get("refused"):
            log.warning("C-MOVE of study %s: %d instance(s) refused as retryable", study_uid, counts["refused"])
            return MoveOutcome(False, unusable, f"{counts['refused']} instance(s) refused as retryable "
                                                f"({_distinct(notes)})", pacs_problem=True)
        if unusable:
            # PACS such as Orthanc end the move with 0xC000 after a refusal and may skip the study's remaining
            # instances: the next attempt fetches them, and the refused ones if the PACS corrected them.
            log.warning("C-MOVE of study %s: %d instance(s) refused as unusable", study_uid, unusable)
            return MoveOutcome(False, unusable, f"{unusable} instance(s) refused as unusable ({_distinct(notes)})")
        if final is None:
            log.warning("C-MOVE of study %s: no final response", study_uid)
            return MoveOutcome(False, 0, "C-MOVE: no final response (timeout or aborted)", pacs_problem=True)
        code = int(final.Status)
        if code == 0x0000:
            return MoveOutcome(True)
        failed_subops = int(final.get("NumberOfFailedSuboperations") or 0)
        log.warning("C-MOVE of study %s ended with status 0x%04X (%d sub-operation(s) failed)", study_uid, code,
                    failed_subops)
        return MoveOutcome(False, 0, f"C-MOVE ended with status 0x{code:04X}, {failed_subops} sub-operation(s) "
                                     "failed", pacs_problem=True)

    def run_once(self, progress: Progress | None = None) -> PullSummary:
        state = self.state()
        now = self.clock()
        floor = days_before(state.date, self.lookback_days)
        summary = PullSummary(floor=floor)
        dated = self.find(floor)
        undated: list[FoundStudy] = []
        if self.find_undated:
            try:
                undated = self.find_without_study_date(floor)
                summary.undated_searched = True
            except PullError as exc:
                summary.undated_error = str(exc)
                log.warning("studies without StudyDate not searched: %s", exc)
        found = {study.uid: study for study in dated}
        for study in undated:
            found.setdefault(study.uid, study)
        summary.found, summary.found_undated = len(dated), len(found) - len(dated)

        to_move: list[FoundStudy] = []
        for study in found.values():
            retry = state.retry.get(study.uid)
            if state.is_done(study.uid):
                summary.skipped += 1
            elif study.uid in state.given_up:
                summary.skipped_given_up += 1
            elif retry is not None and retry.next_try > now:
                summary.waiting += 1
            else:
                to_move.append(study)
        for uid, retry in state.retry.items():  # failed studies the C-FIND no longer finds
            if uid not in found:
                if retry.next_try <= now:
                    to_move.append(FoundStudy(uid, retry.date, undated=retry.undated))
                else:
                    summary.waiting += 1
        to_move.sort(key=lambda s: (s.key_date, s.time, s.uid))

        if progress:
            progress(0, len(to_move))
        for moved, study in enumerate(to_move, 1):
            was_retry = study.uid in state.retry
            outcome = self.move(study.uid)
            summary.unusable_instances += outcome.unusable
            summary.pacs_problems += outcome.pacs_problem
            if outcome.done:
                summary.retrieved += 1
                summary.retried += was_retry
                state.mark_done(study.uid, study.key_date, study.undated)
            else:
                reason = outcome.reason or "not retrieved"
                entry = state.mark_failed(study.uid, study.key_date, study.undated, reason, self.clock(), self.retry)
                if isinstance(entry, GivenUp):
                    summary.given_up[study.uid] = reason
                    log.warning("study %s given up after %d attempt(s): %s", study.uid, entry.attempts, reason)
                else:
                    summary.failed[study.uid] = reason
            self._save(state)  # resume here after a crash
            if progress:
                progress(moved, len(to_move))

        state.advance([study.key_date for study in found.values() if study.key_date],
                      beijing_now().strftime("%Y%m%d"), self.lookback_days)
        self._save(state)
        summary.watermark = state.date
        return summary


def _distinct(notes: list[str], most: int = 3) -> str:
    """The distinct refusal notes, in order, at most ``most`` of them."""
    seen = list(dict.fromkeys(notes))
    if not seen:
        return "no status comment"
    return "; ".join(seen[:most]) + (f"; and {len(seen) - most} more" if len(seen) > most else "")
