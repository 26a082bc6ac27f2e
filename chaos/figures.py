"""What a fault scenario counts, and its oracle's verdict: one :class:`Figures` per scenario and variant."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Figures:
    """The counts of one run of a scenario (on one store, or at one door) and the oracle's failures.

    ``tries``: faults injected (kills, restarts) or sends made (with retries), as ``tries_of`` says.
    ``acknowledged``: items the source was told were accepted (broker ack, HTTP 200, AA, 0x0000).
    ``lost_allowed``: acknowledged items not stored that docs/rules.md "Delivery" allows to be lost;
    ``lost_not_allowed``: every other acknowledged item not stored (the oracle wants 0).
    ``false_acks``: items acknowledged after the fault was over and never stored (the oracle wants 0).
    ``refusals``: the documented "not now, resend" answers (HTTP 503, HL7 AE 207, DICOM 0xA700, CSV exit 2);
    ``http_5xx``: any other 5xx answer (an internal error: the oracle wants 0).
    ``crashes``: processes of the exchange that exited without being told to; ``hangs``: requests or
    recoveries that did not finish within their deadline.
    ``lag_zero_seconds``: from the end of the load until the engine had stored everything it would
    store and its committed offsets had caught up; None when that never happened.
    """

    scenario: str
    variant: str
    tries: int = 0
    tries_of: str = "faults"
    acknowledged: int = 0
    stored: int = 0
    lost_allowed: int = 0
    lost_not_allowed: int = 0
    duplicates: int = 0
    false_acks: int = 0
    refusals: int = 0
    http_5xx: int = 0
    crashes: int = 0
    hangs: int = 0
    lag_zero_seconds: float | None = None
    #: False for a scenario without an engine (the lag figure is then not printed).
    lag_applies: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def expect(self, condition: bool, failure: str) -> None:
        """Record ``failure`` unless ``condition`` holds (an oracle clause)."""
        if not condition:
            self.failures.append(failure)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        lag = ("n/a (no engine)" if not self.lag_applies else "never" if self.lag_zero_seconds is None
               else f"{self.lag_zero_seconds:.1f} s")
        text = (f"{self.scenario} [{self.variant}]: {self.tries} {self.tries_of}, {self.acknowledged} acknowledged, "
                f"{self.stored} stored, lost {self.lost_allowed} as allowed / {self.lost_not_allowed} not allowed, "
                f"{self.duplicates} duplicated, {self.false_acks} false ACKs, {self.refusals} refusals, "
                f"{self.http_5xx} 5xx, {self.crashes} crashes, {self.hangs} hangs, lag back to zero in {lag}")
        if self.extra:
            text += "\n    " + ", ".join(f"{k}={v}" for k, v in self.extra.items())
        verdict = "PASS" if self.ok else "FAIL: " + "; ".join(self.failures)
        return f"{text}\n    {verdict}"
