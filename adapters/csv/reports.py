"""Grouping parsed rows into lab reports.

- Rows sharing a report number (报告单号) form one report, wherever they are in the file (grouped by key,
  not only consecutive rows); the report number is the ``result_id``. Rows of one report number with
  different versions form one report per version, so a file holding both the preliminary and the final
  rows of a report number yields two versions (docs/rules.md, "Statuses and versions").
- Rows are grouped while the file is read; a report is complete after its last row, so only the reports
  still open are held (one at a time in an export that writes each report's rows together).
- All-or-nothing per report number: one bad row, or a row naming another patient (or another sex or birth
  date) than the report's first row, or another status for the same version, rejects every row of that
  report number.
- ``reported_at`` is the latest report time among a version's rows, ``collected_at`` the earliest
  collection time. The report's item is the panel column when there is one, else the single row's item,
  else a placeholder code that stays unmapped (recognition then works per observation).
"""
from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, field

from adapters.csv.rows import BadRow, Row
from adapters.report import Code, LabReport, Patient


@dataclass
class ReportGroup:
    """All rows of one report number, by version, and the reasons it is rejected (if any)."""

    report_id: str
    first_line: int
    versions: dict[int, list[Row]] = field(default_factory=dict)
    lines: list[int] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    reason: str | None = None  # a report-level reason (pipeline refusal)

    @property
    def rejected(self) -> bool:
        return bool(self.bad) or self.reason is not None


class ReportGrouper:
    """Groups parsed rows into report groups as the file is read: :meth:`add` every row in file order,
    :meth:`close` a report number once its last row is in.

    ``known`` holds the report numbers that aligned rows carry (a first reading of the file gives them). A
    misaligned row joins a report only when its would-be report number is one of them: its cell could hold
    anything (a name), which must not become a report number in a message.
    """

    def __init__(self, known: Container[str]) -> None:
        self.known = known
        self.open: dict[str, ReportGroup] = {}  # in order of first line: a closed number never comes back

    def add(self, item: Row | BadRow) -> ReportGroup | None:
        """The group ``item`` joined, or None for a bad row that belongs to no report number."""
        if isinstance(item, BadRow) and not item.aligned and item.report_id not in self.known:
            item.report_id = None
        if item.report_id is None:
            return None
        group = self.open.get(item.report_id)
        if group is None:
            group = self.open[item.report_id] = ReportGroup(item.report_id, item.line)
        group.lines.append(item.line)
        if isinstance(item, BadRow):
            group.bad.append(item)
            return group
        first = next((rows[0] for rows in group.versions.values()), None)
        if first is not None:
            conflict = _conflict(first, item, group.versions.get(item.version))
            if conflict:
                group.bad.append(BadRow(item.line, item.report_id, conflict))
                return group
        group.versions.setdefault(item.version, []).append(item)
        return group

    def close(self, report_id: str) -> ReportGroup:
        """The complete group of ``report_id``, no longer open."""
        return self.open.pop(report_id)

    def first_open_line(self) -> int | None:
        """The first line of the earliest group still open, or None when none is."""
        return next((group.first_line for group in self.open.values()), None)


def _conflict(first: Row, row: Row, same_version: list[Row] | None) -> str | None:
    """Why ``row`` cannot belong to the report whose first row is ``first``, or None."""
    if row.resident_id != first.resident_id:
        return f"report number {row.report_id} already belongs to another patient (line {first.line})"
    for name, label in (("sex", "sex"), ("birth_year", "birth date")):
        a, b = getattr(first, name), getattr(row, name)
        if a is not None and b is not None and a != b:
            return f"{label} differs from line {first.line} of the same report"
    if same_version and same_version[0].status != row.status:
        return (f"status {row.status} differs from {same_version[0].status} on line {same_version[0].line} "
                f"for version {row.version} of the same report")
    return None


def build_reports(group: ReportGroup, institution: str, file_name: str) -> list[LabReport]:
    """One LabReport per version of an accepted group, in version order."""
    reports = []
    for version, rows in sorted(group.versions.items()):
        head = rows[0]
        panel = next((r.panel for r in rows if r.panel), None)
        if panel is not None:
            codes: Sequence[Code] = [panel]
        elif len(rows) == 1:
            codes = rows[0].observation.codes
        else:
            # No panel column: the report's own item stays unmapped; recognition works per observation.
            codes = [Code("CSV-REPORT", None, "组合未导出 / no panel in the export")]
        collected = [r.collected_at for r in rows if r.collected_at]
        reports.append(LabReport(
            institution=institution, result_id=group.report_id, version=version, status=head.status,
            patient=Patient(head.resident_id, next((r.sex for r in rows if r.sex), None),
                            next((r.birth_year for r in rows if r.birth_year), None), f"line {head.line}"),
            codes=codes, observations=[r.observation for r in rows],
            reported_at=max(r.reported_at for r in rows), collected_at=min(collected) if collected else None,
            specimen_type=next((r.specimen_type for r in rows if r.specimen_type), None),
            specimen_id=next((r.specimen_id for r in rows if r.specimen_id), None),
            message_id=f"{file_name}#L{head.line}"[:256], location=f"line {head.line}"))
    return reports
