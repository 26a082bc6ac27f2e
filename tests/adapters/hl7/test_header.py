"""MSH checks: what this receiver can never accept is rejected (AR), naming MSH's field."""
from __future__ import annotations

import pytest

from adapters.hl7 import Hl7Error, parse_message
from tests.adapters.hl7.hl7data import broken


@pytest.mark.parametrize("old, new, code, where", [
    ("ORU^R01^ORU_R01", "ADT^A01^ADT_A01", "200", "MSH^1^9"),
    ("ORU^R01^ORU_R01", "ORU^R30^ORU_R30", "201", "MSH^1^9"),
    ("|P|2.5.1|", "|P|2.6|", "203", "MSH^1^12"),
    ("|P|2.5.1|", "|T|2.5.1|", "202", "MSH^1^11"),
])
def test_unsupported_messages_are_rejected(old, new, code, where) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Hl7Error) as info:
        parse_message(broken(old, new), "bj-chaoyang-001")
    assert (info.value.hl7_code, info.value.location, info.value.reject) == (code, where, True)
