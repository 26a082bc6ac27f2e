"""``hrx adapter csv``: publish lab results from a LIS export (CSV/TSV, one observation per row).

The adapter (:mod:`adapters.csv`) is imported inside the command, so ``--help`` answers without loading it.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import click

#: Rows above which a file read from a pipe reports its progress (a terminal always gets a bar).
PROGRESS_ROWS = 5000


class RowProgress:
    """A tqdm progress bar on a terminal; for a large file on a pipe, a plain line every 10 %; else nothing.

    Fits :data:`adapters.csv.Progress`: ``RowProgress(total, label)`` is a context manager whose value is
    ``update(rows_done)``.
    """

    def __init__(self, total: int, label: str = "rows", stream: TextIO | None = None,
                 threshold: int = PROGRESS_ROWS, tty: bool | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.enabled = total > 0 and (self.tty or total > threshold)
        self.label = label
        self.done = 0
        self._next = 0.1
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if self.enabled and self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.label, unit="row", file=self.stream, leave=True)
        return self.update

    def update(self, rows: int) -> None:
        if not self.enabled or rows <= 0:
            return
        self.done += rows
        if self._bar is not None:
            self._bar.update(rows)
            return
        while self.done >= self.total * self._next - 1e-9 and self._next <= 1.0 + 1e-9:
            self.stream.write(f"{self.label}: {self._next:.0%} ({min(self.done, self.total)}/{self.total})\n")
            self.stream.flush()
            self._next += 0.1

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


@click.command("csv")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--institution", required=True, help="the issuing institution's id (codes/data/institutions.yaml)")
@click.option("--profile", "profile_name", required=True,
              help="column profile: a name in adapters/profiles/ (lis-generic-zh, …) or a path to a YAML file")
@click.option("--encoding", default=None, help="auto, utf-8, gbk, gb18030, … (default: the profile's)")
@click.option("--delimiter", default=None, help="auto, comma, tab, semicolon, bar (default: the profile's)")
@click.option("--dry-run", is_flag=True, help="check every row and report; publish nothing")
def csv(file: Path, institution: str, profile_name: str, encoding: str | None, delimiter: str | None,
        dry_run: bool) -> None:
    """Publish lab results from an LIS export FILE (CSV/TSV, one observation per row).

    Every bad row is listed with its line number and sent to hr.deadletter.v1; a report with any bad row
    is rejected as a whole. Exit 0: all published; 1: rows rejected or file refused; 2: broker unavailable
    (re-running the same file is safe).
    """
    from adapters.csv import DELIMITERS, ProfileError, encoding_name, import_file, load_profile
    from adapters.pipeline import ResultPipeline
    from adapters.publish import Publisher
    from exchange import runtime
    from exchange.config import Settings

    if delimiter is not None and delimiter not in DELIMITERS:
        raise click.BadParameter("use auto, comma, tab, semicolon or bar", param_hint="--delimiter")
    try:
        profile = load_profile(profile_name)
        if encoding and encoding != "auto":
            encoding_name(encoding)
    except ProfileError as exc:
        click.echo(f"{file}: refused: {exc}", err=True)
        sys.exit(1)
    settings = Settings.from_env()
    pseudonymizer = runtime.pseudonymizer(settings)  # refuses to start without the exchange's key
    publisher = None if dry_run else Publisher(runtime.require_bootstrap(settings), client_id="hrx-adapter-csv")
    pipeline = ResultPipeline(runtime.codebook(settings), pseudonymizer, publisher)
    try:
        summary = import_file(file, institution, profile, pipeline, encoding=encoding, delimiter=delimiter,
                              dry_run=dry_run, progress=RowProgress)
    finally:
        if publisher is not None:
            publisher.close()
    for problem in summary.problems:
        click.echo(f"{file}: {problem}", err=True)
    for line in summary.lines():
        click.echo(line, err=bool(summary.refused))
    sys.exit(summary.exit_code)
