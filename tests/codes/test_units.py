"""codes.units: UCUM spellings hospitals send are normalised; conversion only between commensurable units."""
from __future__ import annotations

import pytest

from codes.units import convert, normalize_unit, scale_factor


@pytest.mark.parametrize(("sent", "ucum"), [
    ("10*9/L", "10*9/L"), ("10^9/L", "10*9/L"), ("10(9)/L", "10*9/L"), ("x10E9/L", "10*9/L"),
    ("×10⁹/L", "10*9/L"), ("×10^12/L", "10*12/L"), ("10^9 /L", "10*9/L"), ("10³/µL", "10*3/uL"),
    ("mg/dl", "mg/dL"), ("mmol/l", "mmol/L"), ("IU/L", "[IU]/L"), ("mIU/mL", "m[IU]/mL"), ("µmol/L", "umol/L"),
    ("μmol/L", "umol/L"), ("mmHg", "mm[Hg]"), ("fl", "fL"), ("g/dL", "g/dL"), ("%", "%"), ("{ratio}", "{ratio}"),
    ("mL/min/{1.73_m2}", "mL/min/{1.73_m2}"), ("mg/L{FEU}", "mg/L{FEU}"),
])
def test_spellings_normalise_to_ucum(sent: str, ucum: str) -> None:
    assert normalize_unit(sent) == ucum


@pytest.mark.parametrize("text", [None, "", "   ", "cells/uL", "beats/min", "abc", "mg/"])
def test_what_is_not_a_unit_is_none(text: str | None) -> None:
    assert normalize_unit(text) is None


@pytest.mark.parametrize(("value", "source", "target", "expected"), [
    (90.0, "mg/dL", "mg/L", 900.0), (90.0, "mg/dL", "g/L", 0.9), (13.5, "g/dL", "g/L", 135.0),
    (6.5, "10*3/uL", "10*9/L", 6.5), (6.5, "x10E9/L", "10*9/L", 6.5), (880.0, "umol/L", "mmol/L", 0.88),
    (5.0, "mIU/mL", "[IU]/L", 5.0), (50.0, "%", "1", 0.5), (212.0, "[degF]", "Cel", 100.0),
])
def test_commensurable_units_convert(value: float, source: str, target: str, expected: float) -> None:
    assert convert(value, source, target) == pytest.approx(expected)


@pytest.mark.parametrize(("source", "target"), [
    ("mg/dL", "mmol/L"),         # mass ↔ substance needs the molar mass: never here
    ("[IU]/L", "10*9/L"),        # an arbitrary unit is commensurable with itself only
    ("mg/L{FEU}", "mg/L"),       # the annotation says what is measured (fibrinogen-equivalent units)
    ("mL/min/{1.73_m2}", "mL/min"),
    ("{ratio}", "%"),
    ("K/uL", "10*9/L"),          # UCUM's K is the kelvin, not "thousand"
    ("U/L", "mmol/L"),
    ("cells/uL", "10*9/L"),      # not UCUM at all
])
def test_incommensurable_units_do_not_convert(source: str, target: str) -> None:
    assert convert(1.0, source, target) is None
    assert scale_factor(source, target) is None


def test_a_scale_factor_is_a_pure_scale() -> None:
    assert scale_factor("mg/dL", "g/L") == 0.01  # not 0.010000000000000002
    assert scale_factor("[degF]", "Cel") is None  # an offset, not a scale
    assert scale_factor("mmol/l", "mmol/L") == 1.0
