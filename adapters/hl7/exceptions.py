"""The refusal every step of the HL7 v2 adapter raises, carrying what the ACK's ERR segment reports."""
from __future__ import annotations

from adapters.report import AdapterError


class Hl7Error(AdapterError):
    """A refusal: ``hl7_code`` from HL7 table 0357, ``location`` as ``SEG^seq^field[^rep]``; ``reject`` → AR/CR.

    ``reject`` marks what this receiver can never accept as sent (message type, event, version, processing
    ID): HL7 v2 answers those with AR (CR in enhanced mode), everything else with AE (CE).
    """

    def __init__(self, message: str, location: str | None = None, hl7_code: str = "102",
                 reject: bool = False) -> None:
        super().__init__(message, location, code="structure" if hl7_code == "100" else "invalid")
        self.hl7_code = hl7_code
        self.reject = reject
