"""Result events: building, encoding and validating them against ``schemas/``.

Events are validated before they are published and again when they are consumed: the schema files are the
contract between adapters and the engine, whichever language either side is written in.
"""
from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

try:  # optional speed-up (~15x); jsonschema stays the authority for every rejection and its messages
    import fastjsonschema
except ImportError:  # pragma: no cover - without it every event goes through jsonschema alone
    fastjsonschema = None

import schemas
from exchange.config import TOPIC_IMAGING, TOPIC_LAB

SCHEMA_OF_TOPIC = {TOPIC_LAB: "lab-result.v1", TOPIC_IMAGING: "imaging-result.v1"}
TOPIC_OF_SCHEMA = {"hr.lab-result.v1": TOPIC_LAB, "hr.imaging-result.v1": TOPIC_IMAGING}


class InvalidEvent(ValueError):
    """An event that does not satisfy its schema; ``errors`` lists each problem with its JSON path."""

    def __init__(self, schema: str, errors: list[str]) -> None:
        self.schema = schema
        self.errors = errors
        super().__init__(f"{schema}: " + "; ".join(errors))


@cache
def _registry() -> Registry:
    return Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in (schemas.load(n) for n in schemas.NAMES)
    )


@cache
def validator(name: str) -> Draft202012Validator:
    """A compiled validator for schema ``name``; formats (date-time, uuid) are checked, not just annotated."""
    return Draft202012Validator(schemas.load(name), registry=_registry(), format_checker=FormatChecker())


#: Shapes that jsonschema's format checks always accept (uuid; RFC 3339 with a day <= 28); anything else is
#: left to those checks themselves.
_SURELY_VALID = {
    "uuid": re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"),
    "date-time": re.compile(r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:"
                            r"[0-5][0-9](?:\.[0-9]+)?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])\Z"),
}


@cache
def _fast_validator(name: str) -> Any:
    """A fastjsonschema function for ``name`` using jsonschema's own format checks, or None.

    Only its acceptance is used: whatever it rejects is judged again by jsonschema, which gives the verdict
    and the messages. It is never more lenient on our schemas (it reads ``$`` as end of string, and
    ``integer`` excludes 1.0); ``python -m bench.validator_diff`` checks that on mutated events.
    """
    if fastjsonschema is None or name not in ("lab-result.v1", "imaging-result.v1"):
        return None
    checker = FormatChecker()
    formats = {f: (lambda value, _f=f, _sure=sure.match: _sure(value) is not None or checker.conforms(value, _f))
               for f, sure in _SURELY_VALID.items()}
    by_id = {s["$id"]: s for s in (schemas.load(n) for n in schemas.NAMES)}
    return fastjsonschema.compile(schemas.load(name), handlers={"urn": by_id.__getitem__}, formats=formats)


def validate(name: str, event: Any) -> None:
    """Raise InvalidEvent listing every violation of schema ``name`` by ``event``."""
    fast = _fast_validator(name)
    if fast is not None:
        try:
            fast(event)
            return
        except Exception:  # noqa: BLE001 - any doubt of the fast path: jsonschema decides and names every problem
            pass
    errors = sorted(validator(name).iter_errors(event), key=lambda e: list(e.absolute_path))
    if errors:
        raise InvalidEvent(name, [f"{e.json_path}: {e.message}" for e in errors[:20]])


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def decode(name: str, raw: bytes) -> dict[str, Any]:
    """Parse and validate a consumed event; raise InvalidEvent for anything unusable."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(name, [f"not JSON: {exc}"]) from None
    validate(name, event)
    return event


def new_event_id() -> str:
    return str(uuid.uuid4())


def timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 with offset; naive datetimes are refused because a lab time without a zone is ambiguous."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("timestamps must carry a time zone")
    return moment.isoformat()


def parse_timestamp(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return moment
