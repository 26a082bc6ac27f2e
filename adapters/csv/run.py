"""One import run: check every row, build the reports, publish them in batches, dead-letter the rest.

- The file is read several times and never held whole: the encoding is checked and the header found
  (:func:`~adapters.csv.decode.read_table`); an index notes the last line of every report number
  (:func:`index_reports`); the check parses and groups every row and, once a report's last row is in, builds
  and validates its events. Memory holds the index (a report number and a line number per report), the
  reports still open and the problem list; the checked events and the dead letters wait on disk in a
  :class:`~adapters.csv.spill.Spill`. A pipe is first copied to a temporary file; a file that changes while
  it is read is refused, since its readings would not agree.
- Nothing is published before every row is checked, so every rejection is known (and reported) even when
  the broker is down.
- All-or-nothing per report number (:mod:`adapters.csv.reports`): each rejected row is reported as
  ``line N: reason`` and sent to ``hr.deadletter.v1`` with ``origin.file`` and ``origin.line``. The
  dead-letter payload holds the header and the row restricted to the profile's columns, with the resident
  ID replaced by a placeholder; a row with the wrong column count carries no payload (its cells cannot be
  attributed to columns, so a name could sit in any of them) (docs/rules.md, "Privacy").
- Publishing: reports in batches of :data:`BATCH_REPORTS`, in the order of their first line, each batch
  acknowledged by the broker before the next, then the dead letters. When the broker is unavailable the run
  stops and reports exactly what was acknowledged; a re-run of the same file is safe because the store's
  natural key (institution, report number, version) is UNIQUE, so a report already stored is absorbed as a
  duplicate (docs/rules.md, "Delivery").
- Exit codes: 0 every row published, 1 rows rejected (or the whole file refused), 2 broker unavailable.
"""
from __future__ import annotations

import csv
import heapq
import io
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters import metrics
from adapters.csv.decode import DELIMITER_NAMES, CsvFileError, Table, read_table
from adapters.csv.profile import Profile
from adapters.csv.reports import ReportGroup, ReportGrouper, build_reports
from adapters.csv.rows import BadRow, parse_row, report_key
from adapters.csv.spill import Spill
from adapters.dead_letter import publish_dead_letters
from adapters.report import AdapterError
from adapters.pipeline import ResultPipeline
from adapters.publish import BrokerUnavailable
from schemas.dead_letter import dead_letter_event
from schemas.resident_id import scrub

#: Reports per publish, each batch acknowledged before the next.
BATCH_REPORTS = 200
#: Dead letters per publish; a broker outage leaves the rest counted as pending.
DEAD_LETTER_BATCH = 500

#: (total rows, label) → a context manager whose value is ``update(rows_done)``.
Progress = Callable[[int, str], Any]


@dataclass
class Problem:
    """One line of the run's problem list; ``message`` is already scrubbed of resident IDs."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class ImportSummary:
    """What a run did; ``exit_code`` is 0 (all published), 1 (rejections or refused file), 2 (broker down)."""

    file: str
    encoding: str | None = None
    delimiter: str | None = None
    rows: int = 0
    reports: int = 0
    published_reports: int = 0
    published_rows: int = 0
    rejected_rows: int = 0
    rejected_reports: int = 0
    dead_letters: int = 0
    problems: list[Problem] = field(default_factory=list)
    refused: str | None = None
    broker_error: str | None = None
    first_unpublished_line: int | None = None
    dead_letters_pending: int = 0
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        if self.broker_error:
            return 2
        return 1 if self.refused or self.rejected_rows else 0

    def lines(self) -> list[str]:
        """The human summary (stdout)."""
        name = self.file
        if self.refused:
            out = [f"{name}: refused: {self.refused}"]
            if self.broker_error:
                out.append(f"{name}: the dead letter for this refusal was not published (broker unavailable: "
                           f"{self.broker_error})")
            return out
        out = [f"{name}: read {self.rows} row(s) in {self.reports} report(s) "
               f"({self.encoding}, {DELIMITER_NAMES.get(self.delimiter or '', self.delimiter)}-separated)"]
        if self.dry_run:
            out.append(f"{name}: checked only (--dry-run): {self.reports - self.rejected_reports} report(s) "
                       f"would be published; nothing was published")
        else:
            out.append(f"{name}: published {self.published_reports} report(s) ({self.published_rows} row(s)), "
                       "each acknowledged by the broker")
        out.append(f"{name}: rejected {self.rejected_rows} row(s) in {self.rejected_reports} report(s); "
                   f"{self.dead_letters} dead letter(s) sent to hr.deadletter.v1")
        if self.broker_error:
            where = (f"nothing from the report starting on line {self.first_unpublished_line} onwards was "
                     "published" if self.first_unpublished_line
                     else f"every report was published but {self.dead_letters_pending} dead letter(s) were not")
            out.append(f"{name}: STOPPED, broker unavailable: {self.broker_error}; {where}. Re-run the same "
                       "file once the broker is back: reports already stored are recognised by (institution, "
                       "report number, version) and stored exactly once.")
        return out


@dataclass
class ReportIndex:
    """The first reading of a file: its data rows, and the last line of each report number an aligned row
    carries (misaligned rows carrying it included)."""

    rows: int
    last_line: dict[str, int]


def index_reports(table: Table) -> ReportIndex:
    """Read the file once, noting where each report number's rows end (:class:`ReportIndex`)."""
    rows = 0
    last: dict[str, int] = {}
    aligned: set[str] = set()
    for line, cells in table.records():
        rows += 1
        key, in_line = report_key(table, cells)
        if key is not None:
            last[key] = line
            if in_line:
                aligned.add(key)
    return ReportIndex(rows, {key: line for key, line in last.items() if key in aligned})


def import_file(path: Path | str, institution: str, profile: Profile, pipeline: ResultPipeline, *,
                encoding: str | None = None, delimiter: str | None = None, batch_reports: int = BATCH_REPORTS,
                dry_run: bool = False, progress: Progress | None = None) -> ImportSummary:
    """Read, validate, publish and dead-letter one export file; never raises for bad data or a broker outage.

    Every row is checked and every report built before anything is published (so that all rejections are
    known even when the broker is down); then the reports are published in batches of ``batch_reports``, in
    the order of their first line, each batch acknowledged before the next; dead letters go last. A
    pipeline without a publisher, or ``dry_run``, checks only. The door's answers are counted per report
    (:mod:`adapters.metrics`): ``published`` and ``refused``.
    """
    summary = _import_file(path, institution, profile, pipeline, encoding=encoding, delimiter=delimiter,
                           batch_reports=batch_reports, dry_run=dry_run, progress=progress)
    if not summary.dry_run:
        metrics.ANSWERS.labels("csv", "published").inc(summary.published_reports)
        metrics.ANSWERS.labels("csv", "refused").inc(summary.rejected_reports)
    return summary


def _import_file(path: Path | str, institution: str, profile: Profile, pipeline: ResultPipeline, *,
                 encoding: str | None, delimiter: str | None, batch_reports: int, dry_run: bool,
                 progress: Progress | None) -> ImportSummary:
    path = Path(path)
    summary = ImportSummary(file=str(path), dry_run=dry_run or pipeline.publisher is None)
    try:
        pipeline.check_institution(institution)
    except AdapterError as exc:
        summary.refused = exc.message
        return summary
    with ExitStack() as stack:
        letters = stack.enter_context(Spill())
        ready = stack.enter_context(Spill())

        def dead(error: str, line: int | None, payload: str | None) -> None:
            letters.append(dead_letter_event(error, payload, file=str(path), line=line, adapter="csv",
                                             institution=institution))

        def refuse(exc: CsvFileError) -> ImportSummary:
            summary.refused = scrub(str(exc))
            single = stack.enter_context(Spill())
            single.append(dead_letter_event(str(exc), None, file=str(path), line=exc.line, adapter="csv",
                                            institution=institution))
            _send_letters(summary, single, pipeline)
            return summary

        try:
            source = _regular_file(path, stack)
            seen = _identity(source)
            table = read_table(source, profile, encoding, delimiter)
            index = index_reports(table)
        except CsvFileError as exc:
            return refuse(exc)
        summary.encoding, summary.delimiter, summary.rows = table.encoding, table.delimiter, index.rows
        try:
            published_rows = _check(table, path.name, index, institution, profile, pipeline, summary, dead,
                                    None if summary.dry_run else ready, progress)
            if _identity(source) != seen:
                raise CsvFileError("the file changed while it was read; nothing was published: import it again "
                                   "once it is complete")
        except CsvFileError as exc:
            summary.problems.clear()
            summary.rejected_rows = summary.rejected_reports = summary.reports = 0
            return refuse(exc)
        summary.problems.sort(key=lambda p: p.line or 0)
        if summary.dry_run:
            return summary
        with _progress(progress, published_rows, "publishing") as update:
            for chunk in ready.batches(batch_reports):
                try:
                    pipeline.publish([event for _, _, built in chunk for event in built])
                except BrokerUnavailable as exc:
                    summary.broker_error = scrub(str(exc))
                    summary.first_unpublished_line = chunk[0][0]
                    summary.dead_letters_pending = letters.count
                    return summary
                summary.published_reports += sum(len(built) for _, _, built in chunk)
                rows = sum(count for _, count, _ in chunk)
                summary.published_rows += rows
                update(rows)
        _send_letters(summary, letters, pipeline)
    return summary


def _check(table: Table, file_name: str, index: ReportIndex, institution: str, profile: Profile,
           pipeline: ResultPipeline, summary: ImportSummary, dead: Callable[[str, int | None, str | None], None],
           ready: Spill | None, progress: Progress | None) -> int:
    """The checking reading: parse and group every row, build each report once its last row is in, spill the
    accepted ones (``[first line, rows, events]``, in order of first line) and dead-letter the rest. Returns
    the number of rows in accepted reports; CsvFileError when the file no longer matches its index."""
    mapped = sorted(set(table.columns.values()))
    resident_column = table.columns["resident_id"]
    held: dict[int, list[str]] = {}  # the cells of the rows of reports still open, for their dead letters
    done: list[tuple[int, int, list[dict[str, Any]]]] = []  # accepted reports waiting for an earlier one
    grouper = ReportGrouper(index.last_line)
    accepted_rows = 0

    def payload(cells: list[str]) -> str:
        """Header and row restricted to the profile's columns, the resident ID replaced (PIPL: minimum)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=table.delimiter, lineterminator="\n")
        writer.writerow([table.header[i] for i in mapped])
        writer.writerow(["[resident-id]" if i == resident_column else
                         cells[i].replace("\x00", "\ufffd") if i < len(cells) else "" for i in mapped])
        return buffer.getvalue()

    def reject_row(bad: BadRow, cells: list[str]) -> None:
        summary.rejected_rows += 1
        summary.problems.append(Problem(bad.line, scrub(bad.reason)))
        dead(f"line {bad.line}: {bad.reason}", bad.line, payload(cells) if bad.aligned else None)

    def reject_group(group: ReportGroup) -> None:
        summary.rejected_reports += max(1, len(group.versions))
        bad_lines = {b.line for b in group.bad}
        for bad in group.bad:
            reject_row(bad, held[bad.line])
        why = group.reason or f"bad line(s) {', '.join(str(n) for n in sorted(bad_lines))}"
        lines = sorted(group.lines)
        listed = ", ".join(str(n) for n in lines[:50]) + (", …" if len(lines) > 50 else "")
        summary.problems.append(Problem(group.first_line, scrub(
            f"report {group.report_id} rejected entirely (line(s) {listed}): {why}")))
        for line in lines:
            if line not in bad_lines:
                summary.rejected_rows += 1
                dead(f"line {line}: held back with report {group.report_id}, rejected as a whole: {why}", line,
                     payload(held[line]))

    def finish(group: ReportGroup) -> None:
        nonlocal accepted_rows
        summary.reports += max(1, len(group.versions))
        built: list[dict[str, Any]] = []
        if not group.rejected:
            try:
                built = [pipeline.lab_event(r, "csv") for r in build_reports(group, institution, file_name)]
            except AdapterError as exc:
                group.reason = str(exc)
        if group.rejected:
            reject_group(group)
        else:
            accepted_rows += len(group.lines)
            heapq.heappush(done, (group.first_line, len(group.lines), built))
        for line in group.lines:
            del held[line]
        first_open = grouper.first_open_line()
        while done and (first_open is None or done[0][0] < first_open):
            first_line, rows, events = heapq.heappop(done)
            if ready is not None:
                ready.append([first_line, rows, events])

    step = max(1, min(1000, index.rows // 100))  # progress in about 1 % steps, at most every 1,000 rows
    with _progress(progress, index.rows, "checking rows") as update:
        unreported = 0
        for line, cells in table.records():
            item = parse_row(table, line, cells, profile)
            group = grouper.add(item)
            if group is None:
                assert isinstance(item, BadRow)
                reject_row(item, cells)
            else:
                held[line] = cells
                if index.last_line.get(group.report_id) == line:
                    finish(grouper.close(group.report_id))
            unreported += 1
            if unreported >= step:
                update(unreported)
                unreported = 0
        update(unreported)
    if grouper.open:
        raise CsvFileError("the file changed while it was read; nothing was published: import it again once it "
                           "is complete")
    return accepted_rows


def _regular_file(path: Path, stack: ExitStack) -> Path:
    """``path`` itself when it is a regular file (read more than once); else (a pipe) a temporary copy."""
    try:
        if stat.S_ISREG(os.stat(path).st_mode):
            return path
        copy = stack.enter_context(tempfile.NamedTemporaryFile(prefix="hrx-csv-", suffix=path.suffix))
        with open(path, "rb") as stream:
            shutil.copyfileobj(stream, copy)
        copy.flush()
        return Path(copy.name)
    except OSError as exc:
        raise CsvFileError(f"cannot read the file: {exc.strerror or exc}") from None


def _identity(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is written to: (inode, size, modification time); None once it is gone."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


@contextmanager
def _progress(factory: Progress | None, total: int, label: str) -> Iterator[Callable[[int], None]]:
    if factory is None:
        yield lambda rows: None
        return
    with factory(total, label) as update:
        yield update


def _send_letters(summary: ImportSummary, letters: Spill, pipeline: ResultPipeline) -> None:
    """Publish the run's dead letters in batches; on a broker outage, count what was not acknowledged."""
    if summary.dry_run or not letters.count or pipeline.publisher is None:
        return
    for chunk in letters.batches(DEAD_LETTER_BATCH):
        try:
            publish_dead_letters(pipeline.publisher, chunk)
        except BrokerUnavailable as exc:
            summary.broker_error = scrub(str(exc))
            summary.dead_letters_pending = letters.count - summary.dead_letters
            return
        summary.dead_letters += len(chunk)
