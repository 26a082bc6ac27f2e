"""What the harnesses share: instrumentation, the fixed pseudonym key, a broker that acknowledges
everything, and handing a harness to libFuzzer.

A harness is a function of one input's bytes. It returns when the adapter answered as its contract says
(a result, or its documented refusal type) and lets anything else propagate: atheris reports that exception
as a crash, with its traceback, and writes the input to the artifact directory. A hang (an input taking
longer than libFuzzer's ``-timeout``) and memory beyond ``-rss_limit_mb`` are crashes too, reported by
libFuzzer itself.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import atheris

#: The pseudonym key of every harness: fixed, so that a crashing input replays exactly.
FUZZ_KEY = b"hrx-fuzz-pseudonym-key-0123456789abcdef"

#: The project's own packages, instrumented for coverage in every harness.
PROJECT_PACKAGES = ("adapters", "codes", "schemas")

#: Where a harness may write scratch files (the CSV adapter reads a path); ``python -m fuzz`` sets it.
WORK_ENV = "HRX_FUZZ_WORK"


def instrumented(*libraries: str) -> AbstractContextManager[Any]:
    """Instrument the project (and ``libraries``, the parser libraries a door relies on) for coverage: the
    modules imported inside this context, and only those, report the branches they take."""
    return atheris.instrument_imports(include=[*PROJECT_PACKAGES, *libraries])


def work_dir(target: str) -> Path:
    """A scratch directory for ``target``: under ``$HRX_FUZZ_WORK`` when set, else a fresh temporary one."""
    base = os.environ.get(WORK_ENV)
    if base:
        path = Path(base) / target
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix=f"hrx-fuzz-{target}-"))


class AcknowledgingBroker:
    """Takes the place of :class:`adapters.publish.Publisher`: every record is built (and so encoded) and
    acknowledged at once; nothing is kept."""

    bootstrap = None

    def publish(self, records: Iterable[Any]) -> None:
        for _ in records:
            pass

    def close(self) -> None:
        pass


def _relauncher(argv: list[str]) -> list[str]:
    """``argv`` with a program libFuzzer can start again in place of ``argv[0]``.

    libFuzzer's ``-merge`` (and ``-fork``) run their work in child processes started from ``argv[0]``; a harness
    started as ``python -m fuzz.<target>`` has its module's path there, which is no program. The child is this
    same harness, started by a small script.
    """
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is None or not any(a.startswith(("-merge=", "-fork=", "-set_cover_merge=")) for a in argv[1:]):
        return argv
    root = Path(__file__).resolve().parent.parent
    script = work_dir("launchers") / spec.name
    script.write_text(f'#!/bin/sh\ncd "{root}" && exec "{sys.executable}" -m {spec.name} "$@"\n')
    script.chmod(0o755)
    return [str(script), *argv[1:]]


def fuzz(one_input: Callable[[bytes], None],
         custom_mutator: Callable[[bytes, int, int], bytes] | None = None) -> None:
    """Hand ``one_input`` (and a structure-aware ``custom_mutator``, if any) to libFuzzer with this process's
    command line; never returns."""
    # Refusals are logged by the adapters; at thousands of inputs a second that is only noise.
    logging.disable(logging.CRITICAL)
    atheris.Setup(_relauncher(sys.argv), one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
