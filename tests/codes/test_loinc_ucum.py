"""LOINC mod-10 check digit and UCUM syntax."""

from __future__ import annotations

import pytest

from codes.loinc import is_valid_loinc, loinc_check_digit, loinc_problem
from codes.units import UcumError, is_valid_ucum, validate_ucum


@pytest.mark.parametrize("code", ["14749-6", "2345-7", "2823-3", "718-7", "600-7", "57021-8", "62238-1", "4548-4", "10334-1"])
def test_known_codes_pass(code):
    assert is_valid_loinc(code)


def test_check_digit_worked_example():
    # the LOINC users' guide example: odd positions from the right 5,3,1 -> 135*2=270; even 4,2 -> "24";
    # digits of "24270" sum to 15, next multiple of ten 20 -> check digit 5
    assert loinc_check_digit("12345") == 5
    assert loinc_check_digit("14749") == 6


@pytest.mark.parametrize("code", ["14749-7", "2345-1", "14749", "ABC-1", "", "1234567-12"])
def test_bad_codes_fail(code):
    assert not is_valid_loinc(code)
    assert loinc_problem(code)


@pytest.mark.parametrize("unit", [
    "mmol/L", "umol/L", "g/L", "mg/L", "10*9/L", "10*12/L", "%", "fL", "pg", "s", "U/L", "m[IU]/mL", "u[IU]/mL",
    "ng/mL", "pmol/L", "[IU]/mL", "mL/min/{1.73_m2}", "{ratio}", "mm[Hg]", "/[HPF]", "g/(24.h)", "mg/L{FEU}",
    "[pH]", "mosm/kg", "kg/m2", "10*3/uL", "cm[H2O]", "{copies}/mL", "mm/h", "U/g{Hb}",
])
def test_units_parse(unit):
    validate_ucum(unit)


@pytest.mark.parametrize("unit", ["mIU/mL", "µmol/L", "mmHg", "10^9 /L", "m%", "mg/dl ", "kgg", "", "mmol/", "(mg/L", "{a{b}}"])
def test_units_rejected(unit):
    assert not is_valid_ucum(unit)
    with pytest.raises(UcumError):
        validate_ucum(unit)


from hypothesis import given, strategies as st


@given(st.integers(min_value=1, max_value=9_999_999))
def test_exactly_one_check_digit(n):
    body = str(n)
    valid = [d for d in range(10) if is_valid_loinc(f"{body}-{d}")]
    assert valid == [loinc_check_digit(body)]


@given(st.integers(min_value=10, max_value=999_999), st.integers(min_value=0, max_value=5), st.integers(min_value=1, max_value=9))
def test_single_digit_errors_detected(n, pos, delta):
    body = str(n)
    pos %= len(body)
    changed = body[:pos] + str((int(body[pos]) + delta) % 10) + body[pos + 1:]
    assert not is_valid_loinc(f"{changed}-{loinc_check_digit(body)}") or changed.lstrip("0") == body.lstrip("0")
