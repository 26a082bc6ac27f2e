"""Units of measure: UCUM validation, normalisation of the spellings hospitals send, and conversion.

UCUM (the Unified Code for Units of Measure, https://ucum.org) is the unit code system of HL7 v2, FHIR and
LOINC. Parsing and conversion use the maintained ``ucumvert`` package: its grammar is generated from UCUM's
``ucum-essence.xml`` and its conversions run on ``pint`` with UCUM's unit definitions (codes/README.md,
"Units" says why this library).

Rules implemented here:

- data files must hold valid UCUM, case-sensitive, as written (:func:`validate_ucum`);
- what a hospital sends is first normalised (:func:`normalize_unit`): ``10^9/L``, ``10(9)/L``, ``x10E9/L`` and
  ``×10⁹/L`` become ``10*9/L``; ``µ``/``μ`` become ``u``; ``l`` for litre becomes ``L``; atoms listed in
  ``codes/data/unit_spellings.csv`` (``IU`` → ``[IU]``) are replaced;
- two units convert when UCUM gives them the same dimension *and* they carry the same annotations
  (``{FEU}``, ``{1.73_m2}``) and the same arbitrary units (``[IU]``, ``[CFU]``): UCUM defines arbitrary units
  as commensurable with nothing but themselves, and an annotation names what is counted, so ``mg/L{FEU}`` is
  not ``mg/L`` and ``[IU]/L`` is not ``10*9/L`` (:func:`convert`, :func:`scale_factor`).
"""
from __future__ import annotations

import re
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from codes.sources import csv_rows

SPELLINGS_FILE = Path(__file__).resolve().parent / "data" / "unit_spellings.csv"

_ANNOTATION = re.compile(r"\{[^{}]*\}")
_BRACKETED = re.compile(r"\[[^\[\]]*\]")
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
# A leading power of ten as LIS write it: "×10^9", "x10E9", "10(9)", "10^9", "10⁹", "*10*9".
_POWER = re.compile(r"^[×xX*]?10(?:\^|\*|[Ee]|(?=\())?\(?([+-]?\d+)\)?")
_SUPERSCRIPT_POWER = re.compile(r"^([×xX*]?)10([⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺]+)")
_ATOM_SPLIT = re.compile(r"(\{[^{}]*\}|[/.()])")
# "l" (litre) with an optional prefix, standing alone as an atom: UCUM allows both "l" and "L".
_LITRE = re.compile(r"^(da|[YZEPTGMkhdcmunpfazy])?l(-?\d+)?$")


class UcumError(ValueError):
    """The string is not a valid UCUM unit expression."""


@cache
def _parser() -> Any:
    from ucumvert import get_ucum_parser
    return get_ucum_parser()


@cache
def _registry() -> Any:
    from ucumvert import PintUcumRegistry
    return PintUcumRegistry()


@cache
def _spellings() -> dict[str, str]:
    return {row["spelling"]: row["ucum"] for _, row in csv_rows(SPELLINGS_FILE) if row.get("spelling")}


def validate_ucum(unit: str) -> None:
    """Raise :class:`UcumError` unless ``unit`` is a valid UCUM expression, case-sensitive and exactly as
    written (printable ASCII, no spaces): ``mIU/mL``, ``µmol/L`` and ``mmHg`` are not UCUM."""
    problem = _ucum_problem(unit)
    if problem is not None:
        raise UcumError(problem)


@lru_cache(maxsize=4096)  # a code data set names a few hundred units over and over; parsing one costs ms
def _ucum_problem(unit: str) -> str | None:
    from ucumvert import InvalidUcumError, parse_ucum

    if not unit or any(ord(c) < 33 or ord(c) > 126 for c in unit):
        return f"UCUM units are printable ASCII without spaces: {unit!r}"
    try:
        parse_ucum(unit, _parser())
    except InvalidUcumError as exc:
        return str(exc).splitlines()[0]
    return None


def is_valid_ucum(unit: str) -> bool:
    """True when ``unit`` parses as UCUM exactly as written."""
    try:
        validate_ucum(unit)
    except UcumError:
        return False
    return True


@lru_cache(maxsize=4096)
def normalize_unit(text: str | None) -> str | None:
    """The UCUM code for a unit as a hospital wrote it, or None when it is not a unit.

    ``10^9/L``, ``10(9)/L``, ``x10E9/L``, ``×10⁹/L`` → ``10*9/L``; ``mg/dl`` → ``mg/dL``; ``mmol/l`` →
    ``mmol/L``; ``IU/L`` → ``[IU]/L``; ``µmol/L`` → ``umol/L``. Blank text is None.
    """
    if text is None:
        return None
    unit = "".join(text.split()).replace("µ", "u").replace("μ", "u")
    if not unit:
        return None
    unit = _SUPERSCRIPT_POWER.sub(lambda m: f"{m.group(1)}10*{m.group(2).translate(_SUPERSCRIPTS)}", unit)
    unit = unit.translate(_SUPERSCRIPTS)
    unit = _POWER.sub(lambda m: f"10*{m.group(1).lstrip('+')}", unit, count=1)
    spellings = _spellings()
    parts = _ATOM_SPLIT.split(unit)
    for i, part in enumerate(parts):
        if not part or part in "/.()" or part.startswith("{"):
            continue
        part = spellings.get(part, part)
        if (m := _LITRE.match(part)) is not None:
            part = f"{m.group(1) or ''}L{m.group(2) or ''}"
        parts[i] = part
    unit = "".join(parts)
    return unit if is_valid_ucum(unit) else None


def _special(unit: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The annotations and the dimensionless bracketed atoms (arbitrary units such as ``[IU]``) of a unit."""
    annotations = tuple(sorted(_ANNOTATION.findall(unit)))
    bare = _ANNOTATION.sub("", unit)
    arbitrary = []
    for atom in _BRACKETED.findall(bare):
        quantity = _registry().from_ucum(atom)
        if quantity.dimensionless:
            arbitrary.append(atom)
    return annotations, tuple(sorted(arbitrary))


def _quantity(unit: str) -> Any:
    """The pint quantity of a UCUM unit without its annotations (``{ratio}`` alone is the number 1)."""
    bare = _ANNOTATION.sub("", unit)
    bare = re.sub(r"(^|[/.(])(?=[/.)]|$)", r"\g<1>1", bare)  # "{ratio}" → "1", "{copies}/mL" → "1/mL"
    return _registry().from_ucum(bare)


@lru_cache(maxsize=4096)
def _conversion(from_unit: str, to_unit: str) -> tuple[float, float] | None:
    """``(factor, offset)`` with ``to = from * factor + offset``, or None when not commensurable."""
    from pint.errors import DimensionalityError, OffsetUnitCalculusError

    source, target = normalize_unit(from_unit), normalize_unit(to_unit)
    if source is None or target is None:
        return None
    if source == target:
        return 1.0, 0.0
    if _special(source) != _special(target):
        return None
    a, b = _quantity(source), _quantity(target)
    if a.dimensionality != b.dimensionality:
        return None
    quantity = _registry().Quantity
    try:
        zero = quantity(0, a.units).to(b.units).magnitude
        one = quantity(1, a.units).to(b.units).magnitude
    except (DimensionalityError, OffsetUnitCalculusError):
        return None
    scale = a.magnitude / b.magnitude
    factor = float(f"{(one - zero) * scale:.12g}")  # 1 mg/dL is 0.01 g/L, not 0.010000000000000002
    return factor, float(f"{zero / b.magnitude:.12g}")


def convert(value: float, from_unit: str, to_unit: str) -> float | None:
    """``value`` in ``from_unit`` expressed in ``to_unit`` (both normalised first), or None when the units are
    not commensurable (different dimension, annotation or arbitrary unit). Offsets (``[degF]`` → ``Cel``)
    are applied."""
    found = _conversion(from_unit, to_unit)
    if found is None:
        return None
    factor, offset = found
    return value * factor + offset


def scale_factor(from_unit: str, to_unit: str) -> float | None:
    """The factor that turns a value in ``from_unit`` into ``to_unit`` when the conversion is a pure scale
    (``mg/dL`` → ``g/L``: 0.01), else None (not commensurable, or an offset such as ``[degF]`` → ``Cel``)."""
    found = _conversion(from_unit, to_unit)
    if found is None or found[1] != 0.0:
        return None
    return found[0]
