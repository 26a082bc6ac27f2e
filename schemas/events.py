"""Result events: building, encoding and validating them against ``schemas/``.

Events are validated before they are published and again when they are consumed: the schema files are the
contract between adapters and the engine, whichever language either side is written in.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

try:  # optional speed-up of the acceptance path; jsonschema judges every rejection
    import jsonschema_rs
except ImportError:  # pragma: no cover - without it every event goes through jsonschema alone
    jsonschema_rs = None

import schemas


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


@cache
def _fast_validator(name: str) -> Any:
    """A jsonschema-rs ``is_valid`` for ``name`` (formats checked), or None.

    Only its acceptance is used: whatever it rejects is judged again by jsonschema, which gives the verdict
    and the messages. It must never be more lenient than jsonschema on our schemas; ``python -m
    bench.validator_diff`` checks that on mutated events; its speed against jsonschema is in bench/results.
    """
    if jsonschema_rs is None or name not in ("lab-result.v1", "imaging-result.v1"):
        return None
    registry = jsonschema_rs.Registry([(s["$id"], s) for s in (schemas.load(n) for n in schemas.NAMES)])
    return jsonschema_rs.Draft202012Validator(schemas.load(name), registry=registry, validate_formats=True).is_valid


def validate(name: str, event: Any) -> None:
    """Raise InvalidEvent listing every violation of schema ``name`` by ``event``."""
    fast = _fast_validator(name)
    if fast is not None and fast(event):
        return
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
