"""Background jobs of the running API (the re-map after a mapping change), with their progress.

A job runs in a thread of the API process and is known to that process only: after a restart it is gone, and
the work it did not finish is done at the next start (``hrx up`` re-maps every stale result before it serves).
What a job changes is committed batch by batch, so its ``done`` count is what is durable.
"""
from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

#: Finished jobs kept for their status pages; older ones are forgotten first.
KEEP = 200


@dataclass
class Job:
    """``state``: ``running``, ``done`` or ``failed``; ``done`` of ``total`` units of work."""

    id: str
    kind: str
    started_by: str
    scope: str | None  # the institution or scope the job works on (who may follow it)
    total: int
    done: int = 0
    state: str = "running"
    errors: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    finished: threading.Event = field(default_factory=threading.Event, repr=False)


class Jobs:
    """The jobs of one API process."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, work: Callable[[Job], dict[str, Any]], *, started_by: str, scope: str | None,
              total: int) -> Job:
        """Run ``work(job)`` in a thread; it updates ``job.done`` as it goes and returns the job's result."""
        job = Job(uuid.uuid4().hex, kind, started_by, scope, total)
        with self._lock:
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.finished.is_set()]
            for old in sorted(finished, key=lambda j: j.started_at)[:max(0, len(finished) - KEEP)]:
                del self._jobs[old.id]
        threading.Thread(target=self._run, args=(job, work), name=f"job-{kind}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    @staticmethod
    def _run(job: Job, work: Callable[[Job], dict[str, Any]]) -> None:
        try:
            job.result = work(job)
            job.state = "done"
        except Exception as exc:  # noqa: BLE001 - a failed job reports why; the API process goes on
            log.exception("job %s (%s) failed", job.id, job.kind)
            job.errors.append(f"{type(exc).__name__}: {exc}")
            job.state = "failed"
        finally:
            job.finished_at = datetime.now(UTC)
            job.finished.set()
