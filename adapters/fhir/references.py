"""Resolving FHIR references inside one Bundle: entries, contained resources and Observation panels.

Rules implemented (FHIR R4 §2.36 "Resolving references in Bundles", §2.27 "Contained resources",
Observation.hasMember):

- a reference resolves to an entry by its ``fullUrl`` or by ``Type/id``; a version suffix
  (``Type/id/_history/n``) is ignored, a Bundle holds one version of each resource;
- a local reference ``#id`` resolves among the ``contained`` resources of the resource that holds the
  reference — for a contained resource, the resource that contains it (contained resources never nest);
- a report's observations are ``DiagnosticReport.result`` and, depth-first, each Observation's
  ``hasMember``: a panel, its members and nested panels are all observations of the report. An Observation
  reached twice (two panels sharing a member) counts once; a panel that contains itself, directly or through
  other panels, is refused, and so is nesting deeper than :data:`MAX_PANEL_DEPTH`.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from adapters.report import AdapterError

#: Panels nest a few levels in practice (culture → organism → susceptibilities); the bound keeps the walk's
#: recursion far from Python's limit whatever a Bundle holds.
MAX_PANEL_DEPTH = 32

@dataclass(frozen=True)
class Located:
    """A resource of the Bundle, where it is (a FHIRPath-like location), and the resource containing it."""

    resource: Any
    location: str
    container: Located | None = None

    @property
    def kind(self) -> str:
        return str(self.resource.get_resource_type())

    @property
    def label(self) -> str:
        """``Type/id`` when the resource has an id (contained ones: ``#id``), else its location."""
        resource_id = self.resource.id
        if not resource_id:
            return self.location
        return f"#{resource_id}" if self.container is not None else f"{self.kind}/{resource_id}"


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "AEIOU" else f"a {kind}"


def reference_text(reference: Any) -> str | None:
    return getattr(reference, "reference", None) or None


class ResourceIndex:
    """The resources of one Bundle by ``fullUrl`` and by ``Type/id``, with the rules above."""

    def __init__(self, bundle: Any) -> None:
        self._by_key: dict[str, Located] = {}
        self._entries: list[Located] = []
        for i, entry in enumerate(bundle.entry or ()):
            resource = entry.resource
            if resource is None:
                continue
            located = Located(resource, f"Bundle.entry[{i}].resource")
            self._entries.append(located)
            if entry.fullUrl:
                self._by_key.setdefault(entry.fullUrl, located)
            if resource.id:
                self._by_key.setdefault(f"{resource.get_resource_type()}/{resource.id}", located)

    def entries(self, kind: str) -> list[Located]:
        """The Bundle's entries of one resource type, in entry order."""
        return [e for e in self._entries if e.kind == kind]

    def find(self, reference: Any, within: Located) -> Located | None:
        """The resource a reference points at, or None when it is not in the Bundle."""
        ref = reference_text(reference)
        if ref is None:
            return None
        if ref.startswith("#"):
            holder = within.container or within
            for i, contained in enumerate(holder.resource.contained or ()):
                if contained.id == ref[1:]:
                    return Located(contained, f"{holder.location}.contained[{i}]", holder)
            return None
        found = self._by_key.get(ref)
        if found is None and "/_history/" in ref:
            found = self._by_key.get(ref.split("/_history/", 1)[0])
        return found

    def resolve(self, reference: Any, kind: str, where: str, within: Located) -> Located:
        """The resource a reference points at; AdapterError naming ``where`` when absent or of another type."""
        found = self.find(reference, within)
        ref = reference_text(reference)
        if found is None:
            place = "among the contained resources" if ref and ref.startswith("#") else "inside the Bundle"
            raise AdapterError(f"reference {ref!r} does not resolve to {_a(kind)} {place}", where)
        if found.kind != kind:
            raise AdapterError(f"reference {ref!r} points at {_a(found.kind)}, not {_a(kind)}", where)
        return found

    def report_observations(self, report: Located) -> list[Located]:
        """``DiagnosticReport.result`` with every panel's ``hasMember``, depth-first, each Observation once."""
        seen: set[int] = set()
        found: list[Located] = []
        for i, reference in enumerate(report.resource.result or ()):
            found.extend(self._walk(reference, f"{report.location}.result[{i}]", report, (), seen))
        return found

    def _walk(self, reference: Any, where: str, within: Located, path: tuple[Located, ...],
              seen: set[int]) -> Iterator[Located]:
        observation = self.resolve(reference, "Observation", where, within)
        if any(o.resource is observation.resource for o in path):
            cycle = " → ".join(o.label for o in (*path, observation))
            raise AdapterError(f"hasMember cycle: {cycle}", where)
        if id(observation.resource) in seen:
            return
        if len(path) >= MAX_PANEL_DEPTH:
            raise AdapterError(f"panels nested deeper than {MAX_PANEL_DEPTH} levels through hasMember", where)
        seen.add(id(observation.resource))
        yield observation
        for j, member in enumerate(observation.resource.hasMember or ()):
            yield from self._walk(member, f"{observation.location}.hasMember[{j}]", observation,
                                  (*path, observation), seen)
