"""Field types of the API's answers: text that must read as a date or a moment, closed vocabularies, and parts
of stored events.

Answers carry moments as the text the route already wrote (``isoformat()``, or orjson's identical RFC 3339
form), so these types check that text and describe it in OpenAPI without parsing and re-writing it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Annotated, Any

from jsonschema import Draft202012Validator, FormatChecker
from pydantic import AfterValidator, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, WithJsonSchema
from pydantic_core import CoreSchema, core_schema

import schemas
from codes.model import QC_LEVELS, TIERS
from schemas.statuses import STATUSES

#: Every answer model refuses keys it does not declare: an answer that grows a field must grow its model too.
ANSWER = ConfigDict(extra="forbid")


def _moment(text: str) -> str:
    if datetime.fromisoformat(text).tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return text


def _day(text: str) -> str:
    date.fromisoformat(text)
    return text


#: An RFC 3339 moment with its UTC offset (``2026-11-21T10:00:00+08:00``).
Timestamp = Annotated[str, AfterValidator(_moment), WithJsonSchema({"type": "string", "format": "date-time"})]
#: An ISO 8601 calendar date (``2025-12-31``).
IsoDate = Annotated[str, AfterValidator(_day), WithJsonSchema({"type": "string", "format": "date"})]
#: A patient pseudonym: the keyed HMAC of the resident ID, 64 hex digits.
Pseudonym = Annotated[str, Field(pattern="^[0-9a-f]{64}$")]


class _Checked:
    """Pydantic metadata: run ``check`` after the base type's validation; describe the field by ``schema``."""

    def __init__(self, check: Callable[[Any], Any], schema: dict[str, Any]) -> None:
        self._check = check
        self._schema = schema

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return dict(self._schema)


class OneOf(_Checked):
    """Text restricted to a vocabulary defined elsewhere (codes.model, schemas), enumerated in OpenAPI:
    ``Annotated[str, OneOf(TIERS)]``."""

    def __init__(self, values: Iterable[str], description: str | None = None) -> None:
        allowed = tuple(values)

        def member(text: str) -> str:
            if text not in allowed:
                raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")
            return text

        schema: dict[str, Any] = {"type": "string", "enum": list(allowed)}
        if description:
            schema["description"] = description
        super().__init__(member, schema)


class EventPart(_Checked):
    """A part of a stored event shown as the issuer sent it (an imaging study, its report), described and checked
    by the event contract's own JSON Schema (``schemas/<schema_name>.json``), not by a copy of it:
    ``Annotated[dict[str, Any], EventPart("imaging-result.v1", "study")]``."""

    def __init__(self, schema_name: str, part: str) -> None:
        schema = schemas.load(schema_name)["properties"][part]
        validator = Draft202012Validator(schema, format_checker=FormatChecker())

        def conforming(value: Any) -> Any:
            problems = [e.message for e in validator.iter_errors(value)]
            if problems:
                raise ValueError(f"{part} does not satisfy {schema_name}: {'; '.join(problems)}")
            return value

        super().__init__(conforming, schema)


Tier = Annotated[str, OneOf(TIERS, "catalogue tier (docs/rules.md, \"Tiers\")")]
QcLevel = Annotated[str, OneOf(QC_LEVELS, "level of the QC body (docs/rules.md, \"QC\")")]
ResultStatus = Annotated[str, OneOf(STATUSES, "the report's status (docs/rules.md, \"Statuses and versions\")")]
