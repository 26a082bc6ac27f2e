"""What operators read about a running exchange: readiness of its parts, backlogs, version and commit.

Used by the health routes (``exchange.api.health``) and the store gauges of ``/metrics`` (``exchange.metrics``).
Nothing here returns patient data: counts, ids of keys and migrations, addresses of services.
"""
from __future__ import annotations

import functools
import os
import socket
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from sqlalchemy import Engine as Database
from sqlalchemy import func, select, text

from exchange.store.models import Decision, DeadLetter, Feedback

#: Set by a deployment (the image build) to name the commit it runs; else read from git when run from a clone.
COMMIT_ENV = "HRX_COMMIT"


@dataclass(frozen=True)
class Backlog:
    """Rows waiting in the store: outbox rows not yet on the broker, and dead letters kept."""

    decisions: int
    feedback: int
    dead_letters: int

    @property
    def outbox(self) -> int:
        return self.decisions + self.feedback


def store_backlog(database: Database) -> Backlog:
    """The outbox backlog and the dead letters kept (three counts, one connection)."""
    with database.connect() as conn:
        decisions = conn.scalar(select(func.count()).select_from(Decision).where(Decision.published_at.is_(None)))
        feedback = conn.scalar(select(func.count()).select_from(Feedback).where(Feedback.published_at.is_(None)))
        dead = conn.scalar(select(func.count()).select_from(DeadLetter))
    return Backlog(int(decisions or 0), int(feedback or 0), int(dead or 0))


def broker_reachable(bootstrap: str, timeout: float = 1.0) -> str | None:
    """None when a bootstrap server accepts a TCP connection within ``timeout``; else what failed (readiness
    only: publishing still waits for the broker's acknowledgements)."""
    errors = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
            return None
        except (OSError, ValueError) as exc:
            errors.append(f"{server.strip()}: {exc}")
    return "; ".join(errors) or "no bootstrap server configured"


def version() -> str:
    try:
        return metadata.version("hr-exchange")
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def commit() -> str:
    """The commit this process runs: ``HRX_COMMIT``, else ``git rev-parse`` of the clone it runs from, else
    ``unknown``."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return "unknown"
    try:
        done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def store_answers(database: Database) -> str | None:
    """None when the store answers a query; else the error."""
    try:
        with database.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - readiness reports every failure instead of raising
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None
