"""One import run: check every row, build the reports, publish them in batches, dead-letter the rest.

- All-or-nothing per report number (:mod:`adapters.csv.reports`): each rejected row is reported as
  ``line N: reason`` and sent to ``hr.deadletter.v1`` with ``origin.file`` and ``origin.line``. The
  dead-letter payload holds the header and the row restricted to the profile's columns, with the resident
  ID replaced by a placeholder; a row with the wrong column count carries no payload (its cells cannot be
  attributed to columns, so a name could sit in any of them) (docs/rules.md, "Privacy").
- Publishing: reports in batches of :data:`BATCH_REPORTS`, each batch acknowledged by the broker before
  the next, then the dead letters. When the broker is unavailable the run stops and reports exactly what
  was acknowledged; a re-run of the same file is safe because the store's natural key (institution, report
  number, version) is UNIQUE, so a report already stored is absorbed as a duplicate (docs/rules.md,
  "Delivery").
- Exit codes: 0 every row published, 1 rows rejected (or the whole file refused), 2 broker unavailable.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.csv.decode import DELIMITER_NAMES, CsvFileError, read_table
from adapters.csv.profile import Profile
from adapters.csv.reports import ReportGroup, build_reports, group_rows
from adapters.csv.rows import BadRow, parse_row
from adapters.dead_letter import publish_dead_letters
from adapters.pipeline import AdapterError, ResultPipeline
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


def import_file(path: Path | str, institution: str, profile: Profile, pipeline: ResultPipeline, *,
                encoding: str | None = None, delimiter: str | None = None, batch_reports: int = BATCH_REPORTS,
                dry_run: bool = False, progress: Progress | None = None) -> ImportSummary:
    """Read, validate, publish and dead-letter one export file; never raises for bad data or a broker outage.

    Two passes: every row is checked and every report built (so that all rejections are known even when the
    broker is down), then the reports are published in batches of ``batch_reports``, in the order of their
    first line, each batch acknowledged before the next; dead letters go last. A pipeline without a
    publisher, or ``dry_run``, checks only.
    """
    path = Path(path)
    summary = ImportSummary(file=str(path), dry_run=dry_run or pipeline.publisher is None)
    try:
        pipeline.check_institution(institution)
    except AdapterError as exc:
        summary.refused = exc.message
        return summary
    letters: list[dict[str, Any]] = []

    def dead(error: str, line: int | None, payload: str | None) -> None:
        letters.append(dead_letter_event(error, payload, file=str(path), line=line, adapter="csv",
                                         institution=institution))

    try:
        table = read_table(path.read_bytes(), profile, encoding, delimiter)
    except CsvFileError as exc:
        summary.refused = scrub(str(exc))
        dead(str(exc), exc.line, None)
        _send_letters(summary, letters, pipeline)
        return summary
    summary.encoding, summary.delimiter, summary.rows = table.encoding, table.delimiter, len(table.rows)
    by_line = dict(table.rows)
    mapped = sorted(set(table.columns.values()))
    resident_column = table.columns["resident_id"]

    def payload(line: int) -> str:
        """Header and row restricted to the profile's columns, the resident ID replaced (PIPL: minimum)."""
        cells = by_line[line]
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=table.delimiter, lineterminator="\n")
        writer.writerow([table.header[i] for i in mapped])
        writer.writerow(["[resident-id]" if i == resident_column else cells[i] if i < len(cells) else ""
                         for i in mapped])
        return buffer.getvalue()

    def reject_row(bad: BadRow) -> None:
        summary.rejected_rows += 1
        summary.problems.append(Problem(bad.line, scrub(bad.reason)))
        dead(f"line {bad.line}: {bad.reason}", bad.line, payload(bad.line) if bad.aligned else None)

    def reject_group(group: ReportGroup) -> None:
        summary.rejected_reports += max(1, len(group.versions))
        bad_lines = {b.line for b in group.bad}
        for bad in group.bad:
            reject_row(bad)
        why = group.reason or f"bad line(s) {', '.join(str(n) for n in sorted(bad_lines))}"
        lines = sorted(group.lines)
        listed = ", ".join(str(n) for n in lines[:50]) + (", …" if len(lines) > 50 else "")
        summary.problems.append(Problem(group.first_line, scrub(
            f"report {group.report_id} rejected entirely (line(s) {listed}): {why}")))
        for line in lines:
            if line not in bad_lines:
                summary.rejected_rows += 1
                dead(f"line {line}: held back with report {group.report_id}, rejected as a whole: {why}", line,
                     payload(line))

    groups, orphans = group_rows([parse_row(table, line, cells, profile) for line, cells in table.rows])
    summary.reports = sum(max(1, len(g.versions)) for g in groups)
    ready: list[tuple[ReportGroup, list[dict[str, Any]]]] = []
    with _progress(progress, summary.rows, "checking rows") as update:
        for bad in orphans:
            reject_row(bad)
        update(len(orphans))
        for group in groups:
            if not group.rejected:
                try:
                    ready.append((group, [pipeline.lab_event(r, "csv")
                                          for r in build_reports(group, institution, path.name)]))
                except AdapterError as exc:
                    group.reason = str(exc)
            if group.rejected:
                reject_group(group)
            update(len(group.lines))
    summary.problems.sort(key=lambda p: p.line or 0)
    if summary.dry_run:
        return summary
    with _progress(progress, sum(len(g.lines) for g, _ in ready), "publishing") as update:
        for start in range(0, len(ready), batch_reports):
            chunk = ready[start:start + batch_reports]
            try:
                pipeline.publish([event for _, built in chunk for event in built])
            except BrokerUnavailable as exc:
                summary.broker_error = scrub(str(exc))
                summary.first_unpublished_line = chunk[0][0].first_line
                summary.dead_letters_pending = len(letters)
                return summary
            summary.published_reports += sum(len(built) for _, built in chunk)
            rows = sum(len(g.lines) for g, _ in chunk)
            summary.published_rows += rows
            update(rows)
    _send_letters(summary, letters, pipeline)
    return summary


@contextmanager
def _progress(factory: Progress | None, total: int, label: str) -> Iterator[Callable[[int], None]]:
    if factory is None:
        yield lambda rows: None
        return
    with factory(total, label) as update:
        yield update


def _send_letters(summary: ImportSummary, letters: list[dict[str, Any]], pipeline: ResultPipeline) -> None:
    """Publish the run's dead letters in batches; on a broker outage, count what was not acknowledged."""
    if summary.dry_run or not letters or pipeline.publisher is None:
        return
    for start in range(0, len(letters), DEAD_LETTER_BATCH):
        chunk = letters[start:start + DEAD_LETTER_BATCH]
        try:
            publish_dead_letters(pipeline.publisher, chunk)
        except BrokerUnavailable as exc:
            summary.broker_error = scrub(str(exc))
            summary.dead_letters_pending = len(letters) - summary.dead_letters
            return
        summary.dead_letters += len(chunk)
