"""The puller's durable state: watermark, studies done, studies to retry, studies given up.

Kept as one JSON value in the spool's state table (:meth:`adapters.dicom.spool.Spool.set_state`), one per
PACS (:func:`state_name`), committed after every study. A study is keyed by its *key date*: its StudyDate, or
for a study without one the latest SeriesDate it was found by (see :mod:`adapters.dicom.pull`).

- ``date``: the watermark, a YYYYMMDD key date; each run queries from ``date - lookback_days``.
- ``done`` / ``done_undated``: StudyInstanceUID → key date of the studies pulled completely (with and
  without a StudyDate), pruned once the key date is below the query's look-back.
- ``retry``: the studies whose last attempt failed, with the attempts made, the earliest next attempt and
  the reason; retried by StudyInstanceUID whether or not a C-FIND still finds them (:class:`RetryPolicy`).
- ``given_up``: the studies whose last allowed attempt failed, with the reason. They are never tried again
  and never pruned, so ``hrx adapter dicom-pull --status`` lists everything that was skipped.

A state written before retries existed (``{"date", "done"}``) reads as one with nothing to retry.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from codes.calendar import beijing_iso

#: Default retry schedule: 8 attempts, the second 10 minutes after the first, each wait twice the one before,
#: capped at 12 hours — the last attempt about 21 hours after the first (time for a hospital to correct a
#: study in its PACS, e.g. add the resident ID).
DEFAULT_RETRY_ATTEMPTS = 8
DEFAULT_RETRY_DELAY = 600.0
DEFAULT_RETRY_MAX_DELAY = 43200.0


def state_name(pacs_ae: str, pacs_host: str, pacs_port: int) -> str:
    """The state table key of one PACS's pull state."""
    return f"pull:{pacs_ae}@{pacs_host}:{pacs_port}"


def days_before(day: str, days: int) -> str:
    """The YYYYMMDD date ``days`` before the YYYYMMDD ``day``."""
    return (datetime.strptime(day, "%Y%m%d") - timedelta(days=days)).strftime("%Y%m%d")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential back-off: at most ``attempts`` attempts per study (the first one
    included); attempt n + 1 is due ``delay * 2 ** (n - 1)`` seconds after attempt n, at most ``max_delay``."""

    attempts: int = DEFAULT_RETRY_ATTEMPTS
    delay: float = DEFAULT_RETRY_DELAY
    max_delay: float = DEFAULT_RETRY_MAX_DELAY

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.delay < 0 or self.max_delay < self.delay:
            raise ValueError("a retry policy needs attempts >= 1 and 0 <= delay <= max_delay")

    def wait_after(self, attempts: int) -> float:
        """Seconds from attempt number ``attempts`` to the next one."""
        return min(self.max_delay, self.delay * 2.0 ** min(attempts - 1, 64))


@dataclass
class Retry:
    """A study whose last attempt failed: ``attempts`` made, the next one due at ``next_try`` (epoch s)."""

    date: str
    undated: bool
    attempts: int
    next_try: float
    first_failed: float
    reason: str


@dataclass
class GivenUp:
    """A study not retried any more: its last allowed attempt failed at ``at`` (epoch s) for ``reason``."""

    date: str
    undated: bool
    attempts: int
    at: float
    reason: str


@dataclass
class PullState:
    date: str
    done: dict[str, str] = field(default_factory=dict)
    done_undated: dict[str, str] = field(default_factory=dict)
    retry: dict[str, Retry] = field(default_factory=dict)
    given_up: dict[str, GivenUp] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> PullState:
        return cls(date=value["date"], done=dict(value.get("done", {})),
                   done_undated=dict(value.get("done_undated", {})),
                   retry={uid: Retry(**entry) for uid, entry in value.get("retry", {}).items()},
                   given_up={uid: GivenUp(**entry) for uid, entry in value.get("given_up", {}).items()})

    def to_json(self) -> dict[str, Any]:
        return {"date": self.date, "done": self.done, "done_undated": self.done_undated,
                "retry": {uid: asdict(entry) for uid, entry in self.retry.items()},
                "given_up": {uid: asdict(entry) for uid, entry in self.given_up.items()}}

    def is_done(self, study_uid: str) -> bool:
        return study_uid in self.done or study_uid in self.done_undated

    def mark_done(self, study_uid: str, key_date: str, undated: bool) -> None:
        self.retry.pop(study_uid, None)
        (self.done_undated if undated else self.done)[study_uid] = key_date

    def mark_failed(self, study_uid: str, key_date: str, undated: bool, reason: str, now: float,
                    policy: RetryPolicy) -> Retry | GivenUp:
        """Count a failed attempt: the study is scheduled for its next attempt, or given up after its last."""
        previous = self.retry.pop(study_uid, None)
        attempts = (previous.attempts if previous else 0) + 1
        if attempts >= policy.attempts:
            given_up = GivenUp(key_date, undated, attempts, now, reason)
            self.given_up[study_uid] = given_up
            return given_up
        retry = Retry(key_date, undated, attempts, now + policy.wait_after(attempts),
                      previous.first_failed if previous else now, reason)
        self.retry[study_uid] = retry
        return retry

    def advance(self, key_dates: list[str], today: str, lookback_days: int) -> None:
        """Move the watermark to the latest key date found, never past ``today`` (a study dated in the future
        must not make the next runs skip the present), and prune what the next query cannot find again.

        Failed studies do not hold the watermark: they are retried by their StudyInstanceUID.
        """
        latest = min(max(key_dates, default=self.date), today)
        self.date = max(self.date, latest)
        floor = days_before(self.date, lookback_days)
        self.done = {uid: day for uid, day in self.done.items() if day >= floor}
        self.done_undated = {uid: day for uid, day in self.done_undated.items() if day >= floor}


def describe(name: str, state: PullState, lookback_days: int) -> dict[str, Any]:
    """The state as a JSON-able report: instants in RFC 3339 at +08:00 (docs/rules.md, "Dates")."""
    def instant(epoch: float) -> str:
        return beijing_iso(datetime.fromtimestamp(epoch, timezone.utc))

    done = [{"study_uid": uid, "key_date": day, "by": "StudyDate"} for uid, day in sorted(state.done.items())]
    done += [{"study_uid": uid, "key_date": day, "by": "SeriesDate"} for uid, day in sorted(state.done_undated.items())]
    return {
        "pull": name,
        "watermark": state.date,
        "queried_from": days_before(state.date, lookback_days),
        "done": sorted(done, key=lambda d: (d["key_date"], d["study_uid"])),
        "retry": [{"study_uid": uid, "key_date": r.date, "by": "SeriesDate" if r.undated else "StudyDate",
                   "attempts": r.attempts, "next_try": instant(r.next_try), "first_failed": instant(r.first_failed),
                   "reason": r.reason}
                  for uid, r in sorted(state.retry.items(), key=lambda item: (item[1].next_try, item[0]))],
        "given_up": [{"study_uid": uid, "key_date": g.date, "by": "SeriesDate" if g.undated else "StudyDate",
                      "attempts": g.attempts, "given_up_at": instant(g.at), "reason": g.reason}
                     for uid, g in sorted(state.given_up.items(), key=lambda item: (item[1].at, item[0]))],
    }
