"""Result statuses of the event contract and their rank (docs/rules.md, "Statuses and versions").

The six statuses are FHIR R4's DiagnosticReport statuses that a finished or withdrawn report can carry.
Their rank orders them when a source sends no explicit version: a correction (rank 3) supersedes a final
report (2), which supersedes a preliminary one (1); a withdrawal (4) supersedes everything.
"""
from __future__ import annotations

from types import MappingProxyType

STATUS_RANK = MappingProxyType({"preliminary": 1, "final": 2, "amended": 3, "corrected": 3, "cancelled": 4,
                                "entered-in-error": 4})
STATUSES: tuple[str, ...] = tuple(STATUS_RANK)
#: Statuses that withdraw a report: it stays visible with its status, never recognizable.
WITHDRAWN: tuple[str, ...] = ("cancelled", "entered-in-error")
