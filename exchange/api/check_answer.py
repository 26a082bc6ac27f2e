"""The answer of ``POST /api/v1/recognition/check``, described for OpenAPI.

The route writes its answer with orjson straight from plain dicts (see :mod:`exchange.api.recognition`); these
models only describe it. They are never on the check's path at runtime, so the tests validate real answers
against them (every model refuses undeclared keys): the description cannot drift from the answer.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, RootModel

from exchange.api.fields import ANSWER, Pseudonym, ResultStatus, Tier, Timestamp
from exchange.api.result_parts import ImagingReport, Retrieval, ResultValue, Study
from exchange.recognize import Status


class Reason(BaseModel):
    model_config = ANSWER

    zh: str
    en: str


class Recognition(BaseModel):
    """The verdict on one item of one prior result for the requesting institution at the moment of the check."""

    model_config = ANSWER

    status: Status
    tier: Tier | None = Field(description="the narrowest recognizing tier; for a refusal, the catalogue's that came "
                              "closest")
    catalogue_id: str | None
    catalogue_version: str | None
    valid_until: Timestamp | None = Field(description="when the result stops being recognizable (docs/rules.md, "
                                          "\"Validity\"); for an expired one, when it stopped")
    via: list[str] = Field(description="every catalogue id that recognizes it")
    reasons: list[Reason] = Field(description="why, in Chinese and English")


class CheckedResult(BaseModel):
    """The prior result (its current version) an entry speaks for."""

    model_config = ANSWER

    ref: str = Field(description="`<issuer>/<result_id>`: what a decision or a feedback names as `result_id`")
    issuer: str
    issuer_name: str | None
    result_id: str
    version: int
    kind: Literal["lab", "imaging"]
    status: ResultStatus
    reported_at: Timestamp
    collected_at: Timestamp | None


class CheckedItem(BaseModel):
    model_config = ANSWER

    code: str | None = Field(description="unified item code; null when the local code is not mapped")
    name_zh: str | None
    name_en: str | None
    category: str | None = Field(description="the item's category (codes/README.md): how a reminder groups it")
    local_code: str


class LabEntry(BaseModel):
    """One item of a prior lab result: the values of that item (for a panel, its components too)."""

    model_config = ANSWER

    result: CheckedResult
    item: CheckedItem
    recognition: Recognition
    values: list[ResultValue]


class ImagingEntry(BaseModel):
    """A prior imaging or function exam: the study, the report and where to retrieve the images."""

    model_config = ANSWER

    result: CheckedResult
    item: CheckedItem
    recognition: Recognition
    report: ImagingReport
    retrieval: Retrieval
    study: Study


Entry = LabEntry | ImagingEntry


class OrderedItem(BaseModel):
    """The priors for one ordered item: the best one, and every other prior of that item."""

    model_config = ANSWER

    item: str
    recognizable: bool = Field(description="a recognizable prior exists: the order duplicates it")
    best: Entry | None = Field(description="the prior to reuse (recognizable), or null")
    others: list[Entry]


class CheckedPatient(BaseModel):
    model_config = ANSWER

    pseudonym: Pseudonym


class _Answer(BaseModel):
    model_config = ANSWER

    check_id: str = Field(description="identifies this check in the audit trail and in the presentations counted",
                          json_schema_extra={"format": "uuid"})
    patient: CheckedPatient
    requesting_institution: str
    at: Timestamp = Field(description="the moment the check was made for")
    complete: bool = Field(description="false when some prior results could not be evaluated")
    incomplete_reason: str = Field(None, description="what could not be evaluated; present only when `complete` "
                                   "is false")


class EncounterAnswer(_Answer):
    """The encounter reminder: every item of every prior result, recognizable or not."""

    trigger: Literal["encounter"]
    results: list[Entry]


class OrderAnswer(_Answer):
    """The order-time duplicate reminder: per ordered item, in the order given."""

    trigger: Literal["order"]
    results: list[OrderedItem]


class CheckAnswer(RootModel[Annotated[EncounterAnswer | OrderAnswer, Field(discriminator="trigger")]]):
    """The check's answer: ``trigger`` says which of the two shapes it is."""
