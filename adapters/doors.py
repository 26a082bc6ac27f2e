"""The network doors' allow-list: which callers may reach the HL7 MLLP and DICOM listeners, and for which
institution each may send (docs/rules.md, "Network doors").

One YAML file serves every door (``--allow FILE``, or ``HRX_DOOR_ALLOW``; an example is
docs/doors.example.yaml)::

    hl7:
      - source: 10.20.1.0/24          # an address or a network (CIDR)
        institution: bj-chaoyang-001  # an institution id of the code book (codes/data/institutions.yaml)
        facilities: [BJCY001]         # MSH-4 ids it sends under (the institution id is always accepted)
    dicom:
      - ae_title: CY_CT01             # the calling AE title
        source: 10.20.3.15            # optional: accepted from this address or network only
        institution: bj-chaoyang-001

Rules implemented:

- A caller is bound to exactly one institution per entry, and a listener (which publishes for one
  institution, its ``--institution``) admits only the entries bound to that institution: a source publishes
  results only as its own institution.
- A DICOM calling AE title belongs to one institution: the same title bound to two institutions is an error.
- The file is checked whole when the listener starts; every problem is reported as ``file:line: what``
  (unknown institution, a malformed address or network, an AE title DICOM does not allow, unknown keys) and
  the listener does not start.
"""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codes.sources import DUP_KEYS, KEY_LINES, LINE, SourceError, line_of, load_yaml

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Keys of an entry, per door: (required, optional).
_KEYS = {"hl7": ({"source", "institution"}, {"facilities"}),
         "dicom": ({"ae_title", "institution"}, {"source"})}
_AE_TITLE_MAX = 16  # PS3.5 6.2, VR AE


class AllowListError(ValueError):
    """The allow-list file is unusable; the message lists every problem as ``file:line: what``."""


@dataclass(frozen=True)
class Hl7Sender:
    """An MLLP sender: connections from ``source`` may send for ``institution`` under the MSH-4 ids
    ``facilities``."""

    source: Network
    institution: str
    facilities: frozenset[str]
    line: int

    def covers(self, address: Address | None) -> bool:
        return address is not None and address in self.source


@dataclass(frozen=True)
class DicomCaller:
    """A DICOM calling AE title bound to ``institution``, from ``source`` only when given."""

    ae_title: str
    institution: str
    source: Network | None
    line: int

    def covers(self, ae_title: str, address: Address | None) -> bool:
        """Whether an association from ``ae_title`` at ``address`` is this entry's."""
        return ae_title == self.ae_title and (self.source is None or (address is not None and address in self.source))


@dataclass(frozen=True)
class AllowList:
    """The parsed file: its HL7 senders and DICOM callers."""

    path: Path
    hl7: tuple[Hl7Sender, ...] = ()
    dicom: tuple[DicomCaller, ...] = ()

    def hl7_senders(self, institution: str) -> tuple[Hl7Sender, ...]:
        return tuple(s for s in self.hl7 if s.institution == institution)

    def dicom_callers(self, institution: str) -> tuple[DicomCaller, ...]:
        return tuple(c for c in self.dicom if c.institution == institution)


def peer_address(host: str) -> Address | None:
    """The peer's IP address from a socket's host string (an IPv4-mapped IPv6 address as IPv4); None when it
    is not an IP address."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def announce(door: str, institution: str, source: str | None, callers: int) -> None:
    """Log, as a listener starts, who may call it: a WARNING when the door is open (``source`` None: no
    allow-list) or when its ``source`` binds no caller to its institution (every caller will be refused)."""
    if source is None:
        log.warning("%s door for %s is OPEN: no allow-list (--allow FILE or HRX_DOOR_ALLOW), any caller that "
                    "reaches it may send results as %s; production must configure one (docs/rules.md, Network "
                    "doors)", door, institution, institution)
    elif callers == 0:
        log.warning("%s door for %s: %s binds no %s caller to %s; every caller will be refused",
                    door, institution, source, door, institution)
    else:
        log.info("%s door for %s: %d caller entr%s from %s", door, institution, callers,
                 "y" if callers == 1 else "ies", source)


def load_allow_list(path: Path, institutions: Collection[str]) -> AllowList:
    """Read and check the allow-list file against the code book's ``institutions``; AllowListError naming
    ``file:line`` for every problem."""
    problems: list[str] = []

    def problem(line: int, message: str) -> None:
        problems.append(f"{path}:{line}: {message}")

    try:
        doc = load_yaml(path)
    except OSError as exc:
        raise AllowListError(f"{path}: cannot read the allow-list: {exc.strerror or exc}") from None
    except SourceError as exc:
        raise AllowListError(f"{path}:{exc.line}: {exc.message}") from None
    hl7: list[Hl7Sender] = []
    dicom: list[DicomCaller] = []
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise AllowListError(f"{path}:1: expected a mapping with the keys hl7 and/or dicom")
    for key, line in doc.get(DUP_KEYS, []):
        problem(line, f"duplicate key {key!r}")
    for door in _public_keys(doc):
        if door not in _KEYS:
            problem(line_of(doc, door), f"unknown door {door!r} (expected hl7 or dicom)")
            continue
        entries = doc[door] or []
        if not isinstance(entries, list):
            problem(line_of(doc, door), f"{door}: expected a list of entries")
            continue
        for entry in entries:
            if not isinstance(entry, dict):
                problem(line_of(doc, door), f"{door}: every entry must be a mapping")
                continue
            before = len(problems)
            fields = _entry_fields(entry, door, institutions, problem)
            if len(problems) > before:
                continue
            if door == "hl7":
                hl7.append(Hl7Sender(fields["source"], fields["institution"],
                                     frozenset(fields["facilities"]) | {fields["institution"]}, line_of(entry)))
            else:
                dicom.append(DicomCaller(fields["ae_title"], fields["institution"], fields["source"], line_of(entry)))
    owners: dict[str, DicomCaller] = {}
    for caller in dicom:
        first = owners.setdefault(caller.ae_title, caller)
        if first.institution != caller.institution:
            problem(caller.line, f"AE title {caller.ae_title!r} is bound to {first.institution} at line "
                                 f"{first.line}: an AE title belongs to one institution")
    if problems:
        raise AllowListError("\n".join(problems))
    return AllowList(path, tuple(hl7), tuple(dicom))


def _public_keys(node: dict[str, Any]) -> list[str]:
    return [k for k in node if k not in (LINE, KEY_LINES, DUP_KEYS)]


def _entry_fields(entry: dict[str, Any], door: str, institutions: Collection[str],
                  problem: Any) -> dict[str, Any]:
    """One entry's checked values; each problem goes to ``problem(line, message)``."""
    required, optional = _KEYS[door]
    keys = set(_public_keys(entry))
    for key, line in entry.get(DUP_KEYS, []):
        problem(line, f"duplicate key {key!r}")
    for key in sorted(keys - required - optional):
        problem(line_of(entry, key), f"unknown key {key!r} (expected {', '.join(sorted(required | optional))})")
    for key in sorted(required - keys):
        problem(line_of(entry), f"{door} entry without {key!r}")
    out: dict[str, Any] = {"source": None, "facilities": ()}
    institution = str(entry.get("institution") or "")
    if "institution" in keys and institution not in institutions:
        problem(line_of(entry, "institution"), f"unknown institution {institution!r}: not in the code book's "
                                               "institution registry (codes/data/institutions.yaml)")
    out["institution"] = institution
    if entry.get("source") is not None:
        try:
            out["source"] = ipaddress.ip_network(str(entry["source"]).strip(), strict=True)
        except ValueError as exc:
            problem(line_of(entry, "source"), f"source {entry['source']!r} is not an IP address or network "
                                              f"(CIDR): {exc}")
    elif "source" in keys:
        problem(line_of(entry, "source"), "source is empty")
    if door == "hl7":
        facilities = entry.get("facilities") or []
        facilities = [facilities] if isinstance(facilities, str) else facilities
        if not isinstance(facilities, list) or not all(isinstance(f, str) and f.strip() for f in facilities):
            problem(line_of(entry, "facilities"), "facilities must be a list of MSH-4 ids")
        else:
            out["facilities"] = tuple(f.strip() for f in facilities)
    else:
        title = str(entry.get("ae_title") or "").strip()
        if "ae_title" in keys and (not title or len(title) > _AE_TITLE_MAX or "\\" in title
                                   or not title.isascii() or not title.isprintable()):
            problem(line_of(entry, "ae_title"), f"AE title {entry.get('ae_title')!r} is not a DICOM AE title "
                                                f"(1 to {_AE_TITLE_MAX} printable ASCII characters, no backslash)")
        out["ae_title"] = title
    return out
