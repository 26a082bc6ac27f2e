"""The roles and the purposes of use each may act under (``exchange/auth/data/roles.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

ROLES_FILE = Path(__file__).with_name("data") / "roles.yaml"
KINDS = ("person", "system", "patient")


@dataclass(frozen=True)
class Role:
    name: str
    kind: str  # person | system | patient
    zh: str
    en: str
    purposes: tuple[str, ...]
    second_factor: bool


@cache
def roles() -> dict[str, Role]:
    raw = yaml.safe_load(ROLES_FILE.read_text(encoding="utf-8"))
    found = {name: Role(name, spec["kind"], spec["zh"], spec["en"], tuple(spec["purposes"]),
                        bool(spec["second_factor"])) for name, spec in raw.items()}
    for role in found.values():
        if role.kind not in KINDS:
            raise ValueError(f"{ROLES_FILE}: role {role.name}: kind {role.kind!r} is not one of {KINDS}")
    return found


def person_roles() -> tuple[str, ...]:
    return tuple(name for name, role in roles().items() if role.kind == "person")


def system_roles() -> tuple[str, ...]:
    return tuple(name for name, role in roles().items() if role.kind == "system")


def purposes() -> tuple[str, ...]:
    """Every purpose of use, in the order the roles name them: the closed list the audit records."""
    return tuple(dict.fromkeys(p for role in roles().values() for p in role.purposes))
