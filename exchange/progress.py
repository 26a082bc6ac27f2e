"""Progress bars of the long commands (``hrx purge``, ``hrx codes remap``, ``hrx catalogue import``,
``hrx adapter dicom-pull``, the demo load): tqdm on stderr when it is a terminal, nothing otherwise (a log file
or a pipe gets the commands' summary lines instead). ``hrx adapter csv`` has its own, which also reports a large
file's progress on a pipe (exchange/cli/adapter_csv.py)."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(total: int, label: str, unit: str = "it") -> Iterator[Callable[[int], None]]:
    """A bar of ``total`` steps (0: unknown, a counter) named ``label``; its value is ``advance(n)``."""
    from tqdm import tqdm

    # disable=None: off when stderr is not a terminal
    with tqdm(total=total or None, desc=label, unit=unit, file=sys.stderr, disable=None, leave=False) as bar:
        yield bar.update
