"""The shapes of a refused request, and the OpenAPI ``responses`` entries that declare them per route.

A refusal names the field at fault first, so an integrator sees at once what to fix: ``{"error": "<field>:
<message>", "field": …}`` from the routes' own checks, ``{"error": …, "problems": [...]}`` when the request
does not parse at all (then FastAPI's own validation answers, reworded by :mod:`exchange.api.app`).
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from exchange.api.fields import ANSWER


class Refusal(BaseModel):
    """A request the route understood and refused (unknown institution, no such result, nothing to revoke)."""

    model_config = ANSWER

    error: str = Field(description="`<field>: <message>`, or the message alone when no field is at fault")
    field: str | None = Field(description="the request field at fault (`items[1]`, `X-HRX-On-Behalf-Of`), if one is")


class FieldProblem(BaseModel):
    model_config = ANSWER

    field: str = Field(description="dotted path of the field in the request (`patient.pseudonym`)")
    message: str


class InvalidRequest(BaseModel):
    """A request that does not parse: every problem, the first one also in ``error``."""

    model_config = ANSWER

    error: str = Field(description="`<field>: <message>` of the first problem")
    problems: list[FieldProblem]


_MEANING = {401: "Not authenticated: no token, or an unknown, expired or revoked one",
            403: "Authenticated, but this role, purpose, institution or scope may not do this",
            404: "Not found", 409: "Conflict with what is already recorded",
            422: "Refused: the field at fault is named first"}


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the 4xx answers a route gives. 422 may be either shape: a refusal by the route,
    or a request that does not parse (this entry replaces FastAPI's own, whose shape the API does not use)."""
    declared: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model: Any = Refusal | InvalidRequest if status == 422 else Refusal
        declared[status] = {"model": model, "description": _MEANING.get(status, "Refused")}
    return declared


#: The router-wide ``responses=`` of every router whose routes need an authenticated caller.
AUTHENTICATED = refusals(401, 403)
