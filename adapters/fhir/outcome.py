"""OperationOutcome answers for refused Bundles, bounded in size whatever the Bundle held.

FHIR R4 OperationOutcome: one ``issue`` per problem with a ``severity``, an IssueType ``code`` and
``diagnostics``; ``expression`` names the element at fault (FHIRPath-like, as the adapter locates it).
An answer holds at most :data:`MAX_ISSUES` issues and at most :data:`MAX_TEXT` characters per text, and
says how much was left out: a malformed Bundle must not cost more to answer than to refuse.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapters.report import AdapterError

MAX_ISSUES = 100
MAX_TEXT = 2000


@dataclass(frozen=True)
class Issue:
    """One problem: an IssueType code (``invalid``, ``structure``, ``conflict``, ``too-costly``, …)."""

    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()


class BundleRefused(AdapterError):
    """Several problems at once; the first one is the error's message and location."""

    def __init__(self, issues: Sequence[Issue], total: int | None = None) -> None:
        if not issues:
            raise ValueError("a refusal needs at least one issue")
        first = issues[0]
        self.issues = tuple(issues)
        self.total = max(total or 0, len(self.issues))
        message = first.diagnostics if self.total == 1 else f"{first.diagnostics} ({self.total} problem(s) in all)"
        super().__init__(message, first.expression[0] if first.expression else None, first.code)


def shorten(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def issues_of(error: AdapterError) -> tuple[tuple[Issue, ...], int]:
    """The issues an error stands for and how many there were in all."""
    if isinstance(error, BundleRefused):
        return error.issues, error.total
    return (Issue(error.code, error.message, (error.location,) if error.location else ()),), 1


def operation_outcome(error: AdapterError) -> dict[str, Any]:
    """The FHIR OperationOutcome that explains a refused Bundle, within the bounds above."""
    issues, total = issues_of(error)
    answer: list[dict[str, Any]] = []
    for issue in issues[:MAX_ISSUES]:
        entry: dict[str, Any] = {"severity": "error", "code": issue.code, "diagnostics": shorten(issue.diagnostics)}
        if issue.expression:
            entry["expression"] = [shorten(e, 512) for e in issue.expression]
        answer.append(entry)
    if total > len(answer):
        answer.append({"severity": "information", "code": "informational",
                       "diagnostics": f"{total - len(answer)} more issue(s) not shown"})
    return {"resourceType": "OperationOutcome", "issue": answer}
