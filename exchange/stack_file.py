"""``var/stack.json``: where a running ``hrx up`` keeps its broker, store, codes and pseudonym key.

``hrx up`` writes it once its broker and store are up and removes it on a clean stop. Adapters, ``hrx engine``,
``hrx serve`` and the other commands started with the same var directory read it for every setting their
environment leaves open (the environment wins), so an adapter started beside ``hrx up`` publishes to its
broker under its key without copying addresses from a log line. A file left by a process that is gone
(``hrx up`` killed) is ignored.

The file may hold the store's URL, so it is written with mode 0600 like the key file; it never holds a key.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from adapters.private_files import PRIVATE_FILE_MODE

log = logging.getLogger(__name__)

STACK_FILE_NAME = "stack.json"


@dataclass(frozen=True)
class StackFile:
    """What a process needs to join a running ``hrx up``."""

    pid: int
    kafka_bootstrap: str
    database_url: str
    codes_dir: str | None
    pseudonym_key_file: str | None  # None: the key was given inline (HRX_PSEUDONYM_KEY) and is not written here
    pseudonym_algorithm: str
    key_id: str
    api: str


def stack_file_path(var_dir: Path) -> Path:
    return var_dir / STACK_FILE_NAME


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def write_stack_file(var_dir: Path, stack: StackFile) -> Path:
    """Write the file atomically (a reader never sees half of it), mode 0600."""
    path = stack_file_path(var_dir)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(stack), fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, path)
    return path


def read_stack_file(var_dir: Path) -> StackFile | None:
    """The stack file of a running ``hrx up`` in ``var_dir``; None when there is none or its process is gone."""
    path = stack_file_path(var_dir)
    try:
        raw = json.loads(path.read_text())
        stack = StackFile(**{f.name: raw[f.name] for f in fields(StackFile)})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring %s: unreadable (%s)", path, exc)
        return None
    if not _alive(stack.pid):
        log.info("ignoring %s: hrx up (pid %d) is no longer running", path, stack.pid)
        return None
    return stack


def remove_stack_file(var_dir: Path, pid: int) -> None:
    """Remove the file if process ``pid`` wrote it (a later ``hrx up`` may have replaced it)."""
    path = stack_file_path(var_dir)
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass
