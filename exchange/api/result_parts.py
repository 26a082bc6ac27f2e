"""How a stored result's parts are shown, the same in the check's answer and in a patient's timeline."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from exchange.api.fields import ANSWER, EventPart

#: The imaging study, its report and where to retrieve the images, as the issuer sent them in its event.
Study = Annotated[dict[str, Any], EventPart("imaging-result.v1", "study")]
ImagingReport = Annotated[dict[str, Any] | None, EventPart("imaging-result.v1", "report")]
Retrieval = Annotated[dict[str, Any] | None, EventPart("imaging-result.v1", "retrieval")]


class ReferenceRange(BaseModel):
    model_config = ANSWER

    low: float | None
    high: float | None
    text: str | None


class ResultValue(BaseModel):
    """One value of a lab report, converted to the unified item's unit when its code is mapped."""

    model_config = ANSWER

    item: str | None = Field(description="unified item code; null when the local code is not mapped")
    local_code: str = Field(description="the code the issuer sent")
    value: float | None = Field(description="numeric value, in `unit`")
    value_text: str | None = Field(description="text or coded value (qualitative results)")
    unit: str | None = Field(description="UCUM unit")
    reference_range: ReferenceRange
    interpretation: str | None = Field(description="abnormal flag as the issuer sent it (HL7 0078: H, L, N, A, ...)")
