"""ORU^R01 (HL7 v2.3 – v2.5.1) → :class:`~adapters.pipeline.LabReport`: structure, patient, statuses and
versions, values, units, reference ranges and flags.

Rules implemented (docs/rules.md, "Statuses and versions", "Dates", "Privacy"):

- Segment order: MSH first, then per patient PID, then per report OBR followed by its OBX (error 100
  otherwise); OBX after an SPM are specimen observations and are skipped; NTE, ORC, PV1, Z-segments etc.
  are ignored. One LabReport per OBR; a message is all-or-nothing (every report maps and validates, then
  all are published together).
- Issuer: the listener's ``--institution`` (a listener serves one hospital). Result ID: OBR-3 (filler order
  number), else OBR-2 (placer order number); two OBR of one message with the same ID are refused (205)
  rather than silently collapsed by the store's natural key.
- Status and version. OBX-11/OBR-25: P (and R, S, I, A) → preliminary v1; F (and U) → final v2; C →
  corrected, X → cancelled, W (wrong patient) → entered-in-error; D, Y, Z are refused (103). HL7 v2 has no
  version field, so a correction or cancellation is ordered by its result time (OBR-22, else MSH-7):
  version = 3 + 2 × minutes since 2000-01-01 UTC (+1 for a cancellation) — a new version, never a
  duplicate, and a second correction issued later is newer than the first (:func:`report_version`). OBR-25
  is authoritative for the report; OBX-11 can only *raise* it, and only when every OBX agrees (a sender
  that forgot to update OBR-25 on a correction), never lower it. Without OBR-25: the common OBX-11, or the
  highest when they differ. An OBX marked X/W carries no value. A stale resend never overwrites a newer
  version: the store keeps the head at the highest version. Limitation: two corrections of one report
  with the same result time (to the minute) are one version.
- Values (OBX-2): NM (also ``<0.5``-style comparators, which LIS often put in NM) → quantity; SN
  (``<^5``, ``>^40`` → quantity with comparator; ``^>^40``, a comparator shifted into SN.2, read the same;
  ratios ``^1^:^40`` and ranges ``^10^-^20`` → text ``1:40``, ``10-20``); ST/TX/FT → text; CE/CWE/CNE
  (e.g. a culture's organism) → coded, the text of each repetition (else its code); ED → the data when it
  is text (type ``TEXT``/``TX`` or subtype ``plain``, encoding A, Base64 or Hex, UTF-8 or GB18030),
  otherwise (PDF, images, RTF, HTML, …) a text saying what the document was (type, subtype, size) and that
  it is not kept — the exchange stores results, not documents; DT/TS/DTM → text holding the ISO 8601 date
  (``2024``, ``2024-03``, ``2024-03-15``) or date-time (offset-less times are +08:00), also in
  ``value_date``; RP (a pointer) is skipped. Numbers are refused (102) unless a double stores them exactly:
  at most 15 significant digits, finite and not subnormal (``1e999`` is not a number at all, a 400-digit
  one has too many digits). The HL7 null ``""`` is an explicit "no value" (also in OBX-6/7/8), never the
  text ``""``; a final or corrected observation (OBX-11 F or C, or OBR-25 F/C when OBX-11 is empty) with
  no value is refused (101, OBX-5). OBX-6 units (common spellings normalised to UCUM: ``10^9/L`` →
  ``10*9/L``, ``µmol/L`` → ``umol/L``, ``IU`` → ``[IU]``): the identifier (OBX-6.1), unless it is a local
  code that is no unit and the text (OBX-6.2) is one (``CD:289^mg/dL`` → ``mg/dL``). OBX-7 reference
  ranges (``3.9-6.1``, ``3.9~6.1`` → low and high; ``>40``, ``≥1`` → low, ``<5``, ``≤5`` → high, with the
  text; a range sent with components, ``35-150^35^150``, is read from its first; anything else free
  text), OBX-8 abnormal flags (``↑``/``↓`` → H/L).
- Patient: the resident ID (居民身份证号) is the PID-3 repetition whose identifier type (CX.5) is
  ``NNCHN`` or whose assigning authority (CX.4) is OID 2.16.156.10011.1.3; missing → 101, invalid (GB
  11643 check) → 102, both naming PID-3 and the repetition. It is pseudonymized by the pipeline and never
  put into an error message.
- Time stamps (YYYYMMDD[HHMM[SS[.S]]][±ZZZZ]) without an offset are China Standard Time (+08:00, no DST
  since 1991). reported_at: OBR-22, else MSH-7; collected_at: OBR-7, else SPM-17.
"""
from __future__ import annotations

import base64
import binascii
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hl7 import parse_datetime

from adapters.hl7.charset import decode
from adapters.hl7.exceptions import Hl7Error
from adapters.hl7.header import Header, check_header, parse_header
from adapters.hl7.imaging import IsImagingService, imaging_report, imaging_sections, is_imaging
from adapters.hl7.segments import ParsedMessage, Segment
from adapters.report import Code, ImagingReport, LabObservation, LabReport, Patient, Value
from codes.calendar import BEIJING
from codes.loinc import is_loinc_system
from codes.units import normalize_unit
from schemas.resident_id import InvalidResidentId, normalize_resident_id
from schemas.statuses import STATUS_RANK

RESIDENT_ID_TYPE = "NNCHN"  # HL7 table 0203: national person identifier, China
RESIDENT_ID_OID = "2.16.156.10011.1.3"  # 中华人民共和国居民身份证号码

_OBX_STATUS = {"P": "preliminary", "R": "preliminary", "S": "preliminary", "I": "preliminary",
               "F": "final", "U": "final", "C": "corrected", "X": "cancelled", "W": "entered-in-error"}
_OBR_STATUS = {"P": "preliminary", "A": "preliminary", "R": "preliminary", "I": "preliminary",
               "S": "preliminary", "O": "preliminary", "F": "final", "C": "corrected", "X": "cancelled"}
_VOID = ("cancelled", "entered-in-error")
_VERSION_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_SEX = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}
_FLAGS = {"↑": "H", "↓": "L", "高": "H", "低": "L", "偏高": "H", "偏低": "L", "阳性": "POS", "阴性": "NEG",
          "+": "POS", "-": "NEG"}
_UNITS = {"IU/mL": "[IU]/mL", "IU/L": "[IU]/L", "mIU/mL": "m[IU]/mL", "mIU/L": "m[IU]/L", "uIU/mL": "u[IU]/mL",
          "fl": "fL", "sec": "s", "mmHg": "mm[Hg]", "mm/hr": "mm/h", "g/dl": "g/dL", "mg/dl": "mg/dL"}
# The offset is ±HHMM of a real UTC offset (under 24 h): python-hl7 accepts any four digits, and an offset of a
# day or more cannot even be printed.
_DTM = re.compile(r"^\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,4})?)?)?)?)?)?"
                  r"(?:[+-](?:[01]\d|2[0-3])[0-5]\d)?$")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_NM_COMPARATOR = re.compile(r"^(<=|>=|<|>|≤|≥|＜|＞|≦|≧)\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))$")
_COMPARATORS = {"<": "<", ">": ">", "<=": "<=", ">=": ">=", "≤": "<=", "≥": ">=", "＜": "<", "＞": ">",
                "≦": "<=", "≧": ">="}
_RANGE = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(?:--?|~|～|—|–|－|至)\s*([+-]?\d+(?:\.\d+)?)\s*$")
_BOUND = re.compile(r"^\s*(<=|>=|<|>|≤|≥|＜|＞|≦|≧)\s*([+-]?\d+(?:\.\d+)?)\s*$")
_SKIPPED_TYPES = ("RP",)
_FINAL_OBX = ("F", "C")  # OBX-11 codes that say the value is the final (or corrected) result
_HL7_NULL = '""'
_MAX_DIGITS = 15  # decimal digits a double always stores exactly (DBL_DIG)
_ED_TEXT_TYPES = ("TEXT", "TX")
_ED_TEXT_SUBTYPES = ("PLAIN", "TEXT", "TXT")
_DATE_VALUE = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(?:(\d{2})(\d{2})?(\d{2})?(\.\d{1,4})?)?([+-]\d{4})?$")
_POWER_START = frozenset("×xX*1")
_UNIT_TIMES = re.compile(r"^[×xX*]\s*(?=10)")
_UNIT_POWER = re.compile(r"^10\^(\d+)")
_UNIT_TEN = re.compile(r"[×xX*]?10")
_UNIT_PER = re.compile(r"\d+/")


def report_version(status: str, result_time: datetime) -> int:
    """Preliminary 1, final 2; a correction or cancellation: 3 + 2 × minutes since 2000 (+1 if cancelling).

    Orders repeated corrections by their result time (OBR-22) where HL7 v2 has no version field.
    """
    rank = STATUS_RANK[status]
    if rank < 3:
        return rank
    minutes = int((result_time - _VERSION_EPOCH).total_seconds() // 60)
    return 3 + 2 * minutes + (1 if rank == 4 else 0)


def _timestamp(seg: Segment, n: int) -> datetime | None:
    value = seg.get(n)
    if not value:
        return None
    try:
        if not _DTM.match(value):  # python-hl7 alone reads "2024-03-15" as 2024-01-01
            raise ValueError(value)
        moment = parse_datetime(value)
    except (ValueError, TypeError):
        raise Hl7Error(f"{value!r} is not an HL7 time stamp (YYYYMMDD[HHMM[SS]][+ZZZZ])", seg.loc(n), "102") from None
    if moment is None:
        return None
    return moment.replace(tzinfo=BEIJING) if moment.tzinfo is None else moment


def _codes(seg: Segment, n: int) -> list[Code]:
    """CE/CWE: code^text^system^alternate code^alternate text^alternate system; local codes first."""
    parts = seg.components(n) + [""] * 6
    codes = []
    for code, text, system in ((parts[0], parts[1], parts[2]), (parts[3], parts[4], parts[5])):
        if not code:
            continue
        if len(code) > 64:
            raise Hl7Error(f"code of {len(code)} characters (at most 64)", seg.loc(n), "102")
        system = system.strip()
        local = system.upper() in ("", "L", "LOCAL")
        codes.append(Code(code, None if local else system, (text or None) and text[:256]))
    return sorted(codes, key=lambda c: is_loinc_system(c.system))


def _patient(pid: Segment) -> Patient:
    for i, rep in enumerate(pid.reps(3), start=1):
        comps = [c + [""] * 3 for c in rep] + [[""] * 3] * 6
        value = comps[0][0].strip()
        typed = comps[4][0].strip().upper() == RESIDENT_ID_TYPE
        authority = RESIDENT_ID_OID in (s.strip() for s in comps[3])
        if value and (typed or authority):
            try:
                normalize_resident_id(value)
            except InvalidResidentId as exc:
                raise Hl7Error(str(exc), pid.loc(3, i), "102") from None
            birth = pid.get(7)
            return Patient(resident_id=value, sex=_SEX.get(pid.get(8).upper()),
                           birth_year=int(birth[:4]) if birth[:4].isdecimal() and 1880 <= int(birth[:4]) <= 2200
                           else None,
                           location=pid.loc(3, i))
    raise Hl7Error(f"PID-3 carries no resident ID (identifier type {RESIDENT_ID_TYPE} or assigning authority "
                   f"{RESIDENT_ID_OID})", pid.loc(3), "101")


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 40 else f"{text[:20]!r}… ({len(text)} characters)"


def _exact(text: str) -> float | None:
    """The decimal ``text`` as a double when the double holds it exactly, else None.

    Exactly: at most 15 significant digits (a double round-trips any such decimal) and a finite, normal
    magnitude (no overflow to infinity, no underflow to 0 or to a subnormal with fewer digits).
    """
    significant = text.lstrip("+-").replace(".", "").lstrip("0").rstrip("0")
    if len(significant) > _MAX_DIGITS:
        return None
    number = float(text)
    if not math.isfinite(number) or (number != 0 and abs(number) < sys.float_info.min) or \
            (number == 0 and significant):
        return None
    return number


def _number(text: str, where: str) -> float:
    if not _NUMBER.match(text):
        raise Hl7Error(f"{_shown(text)} is not a number", where, "102")
    number = _exact(text)
    if number is None:
        raise Hl7Error(f"the number {_shown(text)} cannot be stored exactly (at most {_MAX_DIGITS} significant "
                       "digits, magnitude between about 2.2e-308 and 1.8e308)", where, "102")
    return number


def _null(obx: Segment, n: int) -> bool:
    """Field ``n`` is the HL7 null ``""``: an explicit "no value" (HL7 v2 encoding rules)."""
    return obx.raw(n).strip() == _HL7_NULL


def ucum_unit(unit: str) -> str | None:
    """Normalise the unit spellings LIS commonly send to the UCUM codes the mapping tables use."""
    unit = unit.strip().replace("µ", "u").replace("μ", "u")
    if not unit:
        return None
    if unit[0] in _POWER_START:  # only "×10^9/L"-style units need the rewrites (most units skip them)
        unit = _UNIT_TIMES.sub("", unit)
        unit = _UNIT_POWER.sub(r"10*\1", unit)
    return _UNITS.get(unit, unit)


def _unit(obx: Segment) -> str | None:
    if _null(obx, 6):
        return None
    comps = obx.components(6) + ["", ""]
    code, text = comps[0], comps[1]
    if _UNIT_TEN.fullmatch(code) and _UNIT_PER.match(text):  # an unescaped "10^9/L"
        code, text = f"{code}^{text}", ""
    elif code and text and normalize_unit(code) is None and normalize_unit(text) is not None:
        code = text  # a local unit code ("CD:289") whose text is the unit ("mg/dL")
    unit = ucum_unit(code or text)
    if unit is not None and len(unit) > 64:
        raise Hl7Error("unit longer than 64 characters", obx.loc(6), "102")
    return unit


def _reference(obx: Segment) -> dict[str, Any]:
    """OBX-7: ``low-high`` → low and high; ``>40``/``≥1`` → low, ``<5``/``≤5`` → high (with the text kept, as
    the comparator says whether the limit itself is inside); anything else, or a number a double cannot
    hold exactly, stays text. A single repetition with components (``35-150^35^150``, ``>40^>40``: a
    sender's own text^low^high) is read from its first component when the whole is no range."""
    if _null(obx, 7):
        return {}
    reps = obx.reps(7)
    text = "~".join("^".join(c[0] for c in rep) for rep in reps).strip()  # "3.9~6.1" arrives as two reps
    if not text:
        return {}
    readings = [text]
    if len(reps) == 1 and len(reps[0]) > 1:  # "35-150^35^150": a range with components, read from its first
        readings.append(reps[0][0][0].strip())
    for reading in readings:
        if m := _RANGE.match(reading):
            low, high = _exact(m.group(1)), _exact(m.group(2))
            if low is not None and high is not None:
                return {"ref_low": low, "ref_high": high}
        elif m := _BOUND.match(reading):
            limit = _exact(m.group(2))
            if limit is not None:
                bound = "ref_high" if _COMPARATORS[m.group(1)] in ("<", "<=") else "ref_low"
                return {bound: limit, "ref_text": reading[:256]}
    return {"ref_text": text[:256]}


def _flag(obx: Segment) -> str | None:
    if _null(obx, 8):
        return None
    for rep in obx.reps(8):
        flag = rep[0][0].strip() if rep and rep[0] else ""
        if flag:
            return _FLAGS.get(flag, flag)[:16]
    return None


def _rep_texts(reps: list[list[list[str]]]) -> list[str]:
    """Each repetition's components joined back with ``^`` (a text value whose sender did not escape ``^``)."""
    return ["^".join(c[0] for c in rep).strip("^ ") for rep in reps]


def _sn(obx: Segment, extra: dict[str, Any]) -> Value:
    """SN: comparator ^ number ^ separator/suffix ^ number (HL7 v2 2A.2.70)."""
    parts = obx.components(5) + ["", "", "", ""]
    comparator, first, separator, second = parts[:4]
    if not comparator and first in _COMPARATORS and _NUMBER.match(separator) and not second:
        comparator, first, separator = first, separator, ""  # "^>^40": the comparator shifted into SN.2
    if not any((comparator, first, separator, second)):
        return Value("none", **extra)
    if not separator and not second:
        number = _number(first, obx.loc(5))
        if comparator in ("", "="):
            return Value("quantity", number, **extra)
        if comparator in _COMPARATORS:
            return Value("quantity", number, _COMPARATORS[comparator], **extra)
        if comparator == "<>":
            return Value("text", text=f"<>{first}", **extra)
        raise Hl7Error(f"SN comparator {comparator!r} is not one of > < >= <= = <>", obx.loc(5), "103")
    for part in (first, second):
        if part:
            _number(part, obx.loc(5))
    return Value("text", text=f"{'' if comparator == '=' else comparator}{first}{separator}{second}", **extra)


def _text_value(text: str, obx: Segment, extra: dict[str, Any]) -> Value:
    if len(text) > 4000:
        raise Hl7Error(f"text value of {len(text)} characters (at most 4000)", obx.loc(5), "102")
    return Value("text", text=text, **extra) if text else Value("none", **extra)


def _ed(obx: Segment, extra: dict[str, Any]) -> Value:
    """ED: source application ^ type of data ^ data subtype ^ encoding ^ data (HL7 v2 2A.2.21).

    Text (type TEXT/TX or subtype plain) is kept as the value; any other document is not: the value says
    what it was, so a reader knows to ask the issuer for it.
    """
    parts = obx.components(5) + [""] * 5
    kind, subtype, encoding, data = (p.strip() for p in parts[1:5])
    if not data:
        return Value("none", **extra)
    coding = encoding.upper()
    if coding not in ("", "A", "BASE64", "HEX"):
        raise Hl7Error(f"ED encoding {encoding!r} is not one of A, Base64, Hex (HL7 table 0299)", obx.loc(5), "103")
    raw: bytes | None = None
    try:
        if coding == "BASE64":
            raw = base64.b64decode("".join(data.split()), validate=True)
        elif coding == "HEX":
            raw = bytes.fromhex(data)
    except (binascii.Error, ValueError):
        raise Hl7Error(f"ED data is not valid {encoding}", obx.loc(5), "102") from None
    if kind.upper() in _ED_TEXT_TYPES or subtype.upper() in _ED_TEXT_SUBTYPES:
        text = data if raw is None else _decoded(raw)
        if text is not None:
            return _text_value(text.replace("\r\n", "\n").strip(), obx, extra)
    size = len(data.encode("utf-8")) if raw is None else len(raw)
    what = "/".join(p for p in (kind, subtype) if p) or "data"
    return Value("text", text=f"encapsulated {what} document of {size} bytes, not kept by the exchange: "
                              "ask the issuer for it", **extra)


def _decoded(raw: bytes) -> str | None:
    for codec in ("utf-8", "gb18030"):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    return None


def _date_value(text: str, where: str) -> str:
    """DT/DTM (TS.1): ``YYYY[MM[DD[HH[MM[SS[.S]]]]]][±ZZZZ]`` → ISO 8601 at the precision sent.

    A date alone stays a calendar date; a time without an offset is China Standard Time (+08:00).
    """
    m = _DATE_VALUE.match(text)
    try:
        if not m:
            raise ValueError(text)
        year, month, day, hour, minute, second, fraction, offset = m.groups()
        if hour is None:
            datetime(int(year), int(month or 1), int(day or 1))  # checks month and day
            return "-".join(p for p in (year, month, day) if p)
        if day is None or month is None:
            raise ValueError(text)
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute or 0), int(second or 0))
    except ValueError:
        raise Hl7Error(f"{_shown(text)} is not an HL7 date or time stamp (YYYY[MM[DD[HHMM[SS]]]][+ZZZZ])", where,
                       "102") from None
    zone = offset or "+0800"
    if int(zone[1:3]) > 14 or int(zone[3:]) > 59:
        raise Hl7Error(f"{_shown(text)} has no valid UTC offset", where, "102")
    clock = moment.strftime("%H:%M") + (f":{second}{fraction or ''}" if second else "")
    return f"{moment.date().isoformat()}T{clock}{zone[:3]}:{zone[3:]}"


def _value(obx: Segment, status: str | None) -> Value | None:
    """The observation value; None for an OBX that is not a result (a reference pointer)."""
    kind = obx.get(2).upper()
    extra: dict[str, Any] = {"unit": _unit(obx), "interpretation": _flag(obx), **_reference(obx)}
    reps = obx.reps(5)
    if status in _VOID:
        return Value("none", **extra)
    if kind in _SKIPPED_TYPES:
        return None
    if _null(obx, 5):
        return Value("none", **extra)
    if kind == "NM":
        text = obx.get(5)
        if not text:
            return Value("none", **extra)
        if m := _NM_COMPARATOR.match(text):
            return Value("quantity", _number(m.group(2), obx.loc(5)), _COMPARATORS[m.group(1)], **extra)
        return Value("quantity", _number(text, obx.loc(5)), **extra)
    if kind == "SN":
        return _sn(obx, extra)
    if kind in ("ST", "TX", "FT"):
        return _text_value("\n".join(t for t in _rep_texts(reps) if t), obx, extra)
    if kind in ("CE", "CWE", "CNE"):
        labels = []
        for rep in reps:
            comps = [c[0].strip() for c in rep] + ["", ""]
            if comps[0] or comps[1]:
                labels.append(comps[1] or comps[0])
        return Value("coded", text="; ".join(labels)[:4000], **extra) if labels else Value("none", **extra)
    if kind == "ED":
        return _ed(obx, extra)
    if kind in ("DT", "TS", "DTM"):
        text = obx.get(5)
        if not text:
            return Value("none", **extra)
        iso = _date_value(text, obx.loc(5))
        return Value("text", text=iso, date=iso, **extra)
    if not kind:
        if not any(_rep_texts(reps)):
            return Value("none", **extra)
        raise Hl7Error("OBX-2 (value type) is required when OBX-5 has a value", obx.loc(2), "101")
    raise Hl7Error(f"value type {kind!r} is not supported (NM, SN, ST, TX, FT, CE, CWE, CNE, ED, DT, TS, DTM, RP)",
                   obx.loc(2), "103")


def _status(table: dict[str, str], seg: Segment, n: int) -> str | None:
    code = seg.get(n).upper()
    if not code:
        return None
    if code not in table:
        raise Hl7Error(f"result status {code!r} is not supported ({', '.join(table)})", seg.loc(n), "103")
    return table[code]


def _final(obx: Segment, report_status: str) -> bool:
    """The observation claims to be final: OBX-11 F or C, or no OBX-11 in a final or corrected report."""
    code = obx.get(11).upper()
    return code in _FINAL_OBX if code else report_status in ("final", "corrected")


def _report_status(obr: Segment, obx_statuses: list[tuple[Segment, str | None]]) -> str:
    """OBR-25 is authoritative; a unanimous OBX-11 may raise it, never lower it (see the module docstring)."""
    report = _status(_OBR_STATUS, obr, 25)
    given = [s for _, s in obx_statuses if s is not None]
    unanimous = given[0] if given and len(given) == len(obx_statuses) and len(set(given)) == 1 else None
    if report in _VOID:
        return report
    if unanimous in _VOID:
        return unanimous
    if report is not None:
        if unanimous is not None and STATUS_RANK[unanimous] > STATUS_RANK[report]:
            return unanimous
        return report
    missing = next((seg for seg, s in obx_statuses if s is None), None)
    if missing is not None or not given:
        raise Hl7Error("result status is required in OBX-11 when OBR-25 is empty", missing.loc(11) if missing
                       else obr.loc(25), "101")
    live = [s for s in given if s not in _VOID] or given
    return max(live, key=lambda s: STATUS_RANK[s])


@dataclass
class _Group:
    obr: Segment
    pid: Segment
    obx: list[Segment] = field(default_factory=list)
    spm: Segment | None = None


def _groups(message: ParsedMessage) -> list[_Group]:
    """Walk the segments in order, enforcing the ORU^R01 structure the exchange relies on."""
    pid: Segment | None = None
    groups: list[_Group] = []
    for seg in message.segments[1:]:  # after MSH
        name = seg.name
        if name == "MSH":
            raise Hl7Error("a second MSH inside one message: send one message per MLLP block (batches: file mode)",
                           seg.loc(), "100")
        if name in ("FHS", "BHS", "BTS", "FTS"):
            raise Hl7Error(f"{name} (batch envelope) inside a message: batches are accepted in file mode",
                           seg.loc(), "100")
        if name == "PID":
            pid = seg
        elif name == "OBR":
            if pid is None:
                raise Hl7Error("OBR before any PID: the patient must precede the reports", seg.loc(), "100")
            groups.append(_Group(seg, pid))
        elif name == "OBX":
            if not groups:
                raise Hl7Error("OBX before any OBR: every observation belongs to a report", seg.loc(), "100")
            if groups[-1].spm is None:
                groups[-1].obx.append(seg)
        elif name == "SPM":
            if not groups:
                raise Hl7Error("SPM before any OBR", seg.loc(), "100")
            groups[-1].spm = groups[-1].spm or seg
    if pid is None:
        raise Hl7Error("the message has no PID segment", "PID", "100")
    if not groups:
        raise Hl7Error("the message has no OBR segment: nothing to report", "OBR", "100")
    return groups


def _report(group: _Group, header: Header, msh: Segment, institution: str,
            is_imaging_service: IsImagingService | None = None) -> LabReport | ImagingReport:
    obr = group.obr
    result_id = obr.get(3) or obr.get(2)
    if not result_id:
        raise Hl7Error("OBR-3 (filler order number) or OBR-2 (placer order number) is required: it identifies "
                       "the result", obr.loc(3), "101")
    if len(result_id) > 128:
        raise Hl7Error("order number longer than 128 characters", obr.loc(3), "102")
    codes = _codes(obr, 4)
    if not codes:
        raise Hl7Error("OBR-4 (universal service identifier) is required", obr.loc(4), "101")
    statuses = [(obx, _status(_OBX_STATUS, obx, 11)) for obx in group.obx]
    status = _report_status(obr, statuses)
    if is_imaging(obr, group.obx, codes, is_imaging_service):
        return _imaging(group, header, msh, institution, codes, status)
    observations: list[LabObservation] = []
    for obx, obx_status in statuses:
        obs_codes = _codes(obx, 3)
        if not obs_codes:
            raise Hl7Error("OBX-3 (observation identifier) is required", obx.loc(3), "101")
        value = _value(obx, obx_status)
        if value is None:
            continue
        if value.kind == "none" and status not in _VOID and _final(obx, status):
            raise Hl7Error("OBX-5 (observation value) is empty on a final result: send the value, or result "
                           "status X (no result can be obtained) or P (not yet final)", obx.loc(5), "101")
        observations.append(LabObservation(obs_codes, value, obx.loc()))
    if not observations:
        if status not in _VOID:
            raise Hl7Error("the report has no OBX result", obr.loc(), "101")
        observations.append(LabObservation(codes, Value("none"), obr.loc()))  # cancelled: what was cancelled
    reported = _timestamp(obr, 22) or _timestamp(msh, 7)
    if reported is None:
        raise Hl7Error("OBR-22 (result time) or MSH-7 (message time) is required", obr.loc(22), "101")
    spm = group.spm
    collected = _timestamp(obr, 7) or (_timestamp(spm, 17) if spm else None)
    specimen_type = (spm.get(4) if spm else "") or obr.get(15)  # v2.5 SPM-4, else v2.3/2.4 OBR-15 (SPS)
    specimen_id = (spm.get(2) or spm.get(2, comp=2)) if spm else ""
    return LabReport(
        institution=institution, result_id=result_id, version=report_version(status, reported), status=status,
        patient=_patient(group.pid), codes=codes, observations=observations, reported_at=reported,
        collected_at=collected, specimen_type=specimen_type[:64] or None, specimen_id=specimen_id[:64] or None,
        message_id=header.control_id or None, location=obr.loc())


def _imaging(group: _Group, header: Header, msh: Segment, institution: str, codes: list[Code],
             status: str) -> ImagingReport:
    """A radiology OBR (:mod:`adapters.hl7.imaging`): its text OBX are the report."""
    values = [(obx, value) for obx in group.obx if (value := _value(obx, _status(_OBX_STATUS, obx, 11)))]
    if status not in _VOID and not any(v.text for _, v in values):
        raise Hl7Error("the radiology report has no text OBX", group.obr.loc(), "101")
    reported = _timestamp(group.obr, 22) or _timestamp(msh, 7)
    if reported is None:
        raise Hl7Error("OBR-22 (result time) or MSH-7 (message time) is required", group.obr.loc(22), "101")
    return imaging_report(group.obr, values, institution=institution, codes=codes, status=status,
                          version=report_version(status, reported), patient=_patient(group.pid),
                          reported_at=reported, message_id=header.control_id or None)


def parse_reports(message: ParsedMessage, header: Header, institution: str,
                  is_imaging_service: IsImagingService | None = None) -> list[LabReport | ImagingReport]:
    """Every report of a parsed ORU^R01, or an Hl7Error naming the first problem (nothing partial).

    A radiology OBR becomes an :class:`ImagingReport` (:mod:`adapters.hl7.imaging`); ``is_imaging_service``
    says whether an OBR-4 maps to a unified imaging item."""
    msh = message.msh
    reports: list[LabReport | ImagingReport] = []
    seen: dict[str, str] = {}
    for group in _groups(message):
        report = _report(group, header, msh, institution, is_imaging_service)
        if report.result_id in seen:
            raise Hl7Error(f"OBR {seen[report.result_id]} and {report.location} carry the same order number",
                           group.obr.loc(3), "205")
        seen[report.result_id] = report.location or ""
        reports.append(report)
    return reports


@dataclass(frozen=True)
class ReportOrigin:
    """Where one report's identity came from: the order number's field, and whether OBR-22 was sent."""

    number_location: str  # OBR^n^3 (filler order number), else OBR^n^2 (placer order number)
    result_time_sent: bool  # False: the report time is MSH-7, which a resend changes


def report_origins(message: ParsedMessage) -> list[ReportOrigin]:
    """One :class:`ReportOrigin` per OBR, in the order of :func:`parse_reports`' reports (one per OBR)."""
    return [ReportOrigin(seg.loc(18) if seg.get(18) and seg.get(24).upper() in imaging_sections()
                         else seg.loc(3) if seg.get(3) else seg.loc(2), bool(seg.get(22)))
            for seg in message.segments if seg.name == "OBR"]


def parse_message(raw: bytes | str, institution: str) -> tuple[Header, list[LabReport | ImagingReport]]:
    """Decode (bytes: by MSH-18), parse and check one ORU^R01; raises Hl7Error."""
    text = decode(raw)[0] if isinstance(raw, bytes) else raw
    message, header = parse_header(text)
    check_header(header)
    return header, parse_reports(message, header, institution)

