"""DICOM data set → instance record (at C-STORE time) → one :class:`ImagingReport` per study (at assembly).

Only metadata is read: the pixel data is checked for completeness and then dropped, it is never spooled and
never published. Report text comes from SR content trees, encapsulated PDF reports and waveform annotations
(the rules are in the package docstring, :mod:`adapters.dicom`). An :class:`InstanceRecord` is what the spool keeps per SOP instance: it already carries the
patient's *pseudonym* (the raw resident ID is validated, pseudonymized and forgotten while the C-STORE is
being answered), so nothing on the adapter's disk holds a raw resident ID.
"""
from __future__ import annotations

import csv
import functools
import io
import logging
import re
import struct
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NoReturn, cast

import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.multival import MultiValue
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR, DSdecimal, DSfloat
from pydicom.values import convert_string

from adapters.report import Code, ImagingReport, PseudonymizedPatient, Study
from schemas.resident_id import InvalidResidentId, scrub
from adapters.pseudonymize import Pseudonymizer
from codes.calendar import BEIJING

log = logging.getLogger(__name__)

#: Issuer values that mark a patient identifier as the resident ID (居民身份证号): the HL7 v2-0203 type code
#: for a Chinese national person identifier and the OID of 中华人民共和国居民身份证号码.
RESIDENT_ID_ISSUERS = frozenset({"NNCHN", "2.16.156.10011.1.3", "urn:oid:2.16.156.10011.1.3"})

SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
WAVEFORM_PREFIX = "1.2.840.10008.5.1.4.1.1.9."
#: The study shape (body part, technique) a waveform SOP class implies; waveform IODs carry no body part.
WAVEFORM_SHAPES_FILE = Path(__file__).resolve().parent / "data" / "waveform_shapes.csv"
#: Modalities of instances that describe a study rather than image it: they never decide the study's shape.
NON_IMAGE_MODALITIES = frozenset({"SR", "DOC", "KO", "PR", "REG", "SEG", "OT", "RWV", "AU"})
FINDING_WORDS = ("finding", "所见", "description", "描述")
#: SR relationships that say who observed and how (observer, subject, acquisition), not what was found.
CONTEXT_RELATIONSHIPS = frozenset({"HAS OBS CONTEXT", "HAS ACQ CONTEXT"})
IMPRESSION_WORDS = ("impression", "印象", "结论", "conclusion", "diagnos", "诊断", "意见")

# DIMSE C-STORE statuses (PS3.4 Table B.2-1); the 0xCxxx range is "cannot understand", split here by cause.
STATUS_SUCCESS = 0x0000
STATUS_DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 C.4.2: another instance under this SOP Instance UID
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_SOP_CLASS_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_NO_RESIDENT_ID = 0xC010
STATUS_BAD_RESIDENT_ID = 0xC011
STATUS_PATIENT_CONFLICT = 0xC012


class DicomError(ValueError):
    """A data set that cannot be used: ``status`` is the C-STORE failure status, the message its ErrorComment."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def comment(self) -> str:
        """ErrorComment is LO: at most 64 characters, no backslash; never a resident ID."""
        return scrub(self.message).replace("\\", "/")[:64]


@dataclass
class InstanceRecord:
    """What the exchange needs of one SOP instance; JSON-serializable (``asdict``/``from_dict``)."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str | None
    modality: str
    patient: dict[str, Any]  # {pseudonym, key_id, sex, birth_year}
    accession_number: str | None = None
    body_part: str | None = None
    contrast: bool = False
    localizer: bool = False
    description: str | None = None
    procedure_codes: list[list[str | None]] = field(default_factory=list)  # [code, scheme, meaning]
    study_at: str | None = None  # ISO 8601 with offset
    report: dict[str, Any] | None = None  # {kind, findings, impression, status, reported_at}
    calling_ae: str | None = None
    peer_host: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceRecord:
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def content(self) -> dict[str, Any]:
        """What the instance says, without how it was delivered (the calling AE title, the peer's address):
        two deliveries of the same instance have the same content."""
        found = self.to_dict()
        del found["calling_ae"], found["peer_host"]
        return found


# ------------------------------------------------------------------------------------------------ parsing

#: The top-level elements :func:`instance_record` reads (with their whole sequences). :func:`decode` keeps
#: only these: the rest of a data set (pixel data, private tags, the image module) is checked for
#: completeness but never converted: converting every element of a small CT costs more than the rest of the
#: C-STORE together. A keyword read by instance_record must be listed here
#: (tests/adapters/dicom/test_metadata.py checks that every one it reads is).
HEADER_KEYWORDS = frozenset({
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
    "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "OtherPatientIDsSequence",
    "PatientSex", "PatientBirthDate", "StudyDate", "StudyTime", "TimezoneOffsetFromUTC", "ImageType",
    "ContrastBolusAgent", "ContrastBolusAgentSequence", "AccessionNumber", "BodyPartExamined",
    "StudyDescription", "ProcedureCodeSequence", "ContentDate", "ContentTime", "InstanceCreationDate",
    "InstanceCreationTime", "ContentSequence", "CompletionFlag", "VerificationFlag", "DocumentTitle",
    "EncapsulatedDocument", "WaveformAnnotationSequence",
})
_HEADER_TAGS = frozenset(int(tag_for_keyword(k) or 0) for k in HEADER_KEYWORDS)
_SPECIFIC_CHARACTER_SET = 0x00080005
_LINE_ENDS = re.compile(r"\r\n|\n\r|\r")

#: The elements :func:`instance_record` reads inside sequence items: other patient IDs and their issuers,
#: procedure codes, an SR's content tree.
ITEM_KEYWORDS = frozenset({
    "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "IdentifierTypeCode",
    "UniversalEntityID", "CodeValue", "LongCodeValue", "CodingSchemeDesignator", "CodeMeaning",
    "ConceptNameCodeSequence", "ValueType", "TextValue", "ContentSequence",
})


def _value_kind(vr: str) -> str:
    """What pydicom makes of a value of this VR: a sequence, bytes, numbers or text."""
    if vr == "SQ":
        return "sequence"
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "UN"):
        return "bytes"
    if vr in ("AT", "FD", "FL", "SL", "SS", "SV", "UL", "US", "UV", "IS", "DS"):  # IS, DS: pydicom's int, float
        return "numbers"
    return "text"


#: Tag → the kinds of value its data dictionary VR(s) give, for every element the exchange reads. An explicit
#: VR data set may declare any VR (PS3.5 7.1.2): a sequence sent as text, or a document sent as a number,
#: would otherwise reach code that iterates items or copies bytes.
_READ_KINDS = {int(tag_for_keyword(k) or 0): frozenset(_value_kind(vr) for vr in
                                                        dictionary_VR(int(tag_for_keyword(k) or 0)).split(" or "))
               for k in HEADER_KEYWORDS | ITEM_KEYWORDS}


#: Explicit VRs whose length field has 4 bytes (PS3.5 Table 7.1-1); every other known VR has a 2-byte length.
_LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
_SHORT_VRS = frozenset(vr.encode() for vr in STANDARD_VR - EXPLICIT_VR_LENGTH_32)
_ITEM_DELIMITER = 0xFFFEE00D


def _complete_elements(encoded: bytes, implicit_vr: bool,
                       little_endian: bool) -> Iterator[RawDataElement | DataElement]:
    """The :data:`HEADER_KEYWORDS` elements of the encoded data set, after checking that *every* top-level
    element is present to its full length.

    DicomError (0xC000) for a truncated or undecodable data set: pydicom reads a truncated value silently
    (it returns the bytes there are), so a data set cut off by a crashed sender or a broken file would
    otherwise look usable. Stray bytes after the last element are refused too.

    Elements of defined length are stepped over with ``struct`` (cheaper than pydicom's element generator,
    which builds an object per element); an element of undefined length (a sequence,
    encapsulated pixel data) or with an unknown VR is read by pydicom's generator, which finds its end —
    and it must end with its Sequence Delimitation Item (PS3.5 7.5.2, A.4), else it was cut off.
    """
    endian = "<" if little_endian else ">"
    implicit_head = struct.Struct(f"{endian}HHL").unpack_from
    explicit_head = struct.Struct(f"{endian}HH2sH").unpack_from
    long_length = struct.Struct(f"{endian}L").unpack_from
    delimiter = struct.pack(f"{endian}HHL", 0xFFFE, 0xE0DD, 0)  # ends a value of undefined length
    size, pos, end = len(encoded), 0, 0
    encoding: str | list[str] = default_encoding
    try:
        while pos + 8 <= size:
            if implicit_vr:
                group, number, length = implicit_head(encoded, pos)
                vr: str | None = None
                value_at = pos + 8
            else:
                group, number, raw_vr, length = explicit_head(encoded, pos)
                if raw_vr in _LONG_VRS and pos + 12 <= size:
                    length = long_length(encoded, pos + 8)[0]
                    value_at = pos + 12
                elif raw_vr in _SHORT_VRS:
                    value_at = pos + 8
                else:
                    value_at = -1  # an unknown VR (or an implicit VR element in an explicit data set)
                vr = raw_vr.decode("ascii") if value_at >= 0 else None
            tag = group << 16 | number
            if tag == _ITEM_DELIMITER:
                break  # as pydicom: the data set ends here (any bytes left over are stray)
            if length == 0xFFFFFFFF or value_at < 0:
                stream = io.BytesIO(encoded)
                stream.seek(pos)
                elem = next(data_element_generator(stream, implicit_vr, little_endian, defer_size=None,
                                                   encoding=encoding), None)
                if elem is None:
                    break
                pos = end = stream.tell()
                if isinstance(elem, RawDataElement) and elem.length != 0xFFFFFFFF:  # an unknown VR
                    if len(elem.value or b"") < elem.length:
                        _truncated(tag)
                elif encoded[pos - 8:pos] != delimiter:
                    _truncated(tag)  # pydicom stops at the end of the bytes without its delimiter, silently
                if tag in _HEADER_TAGS:
                    yield elem
                continue
            if value_at + length > size:
                _truncated(tag)
            if tag in _HEADER_TAGS:
                value = encoded[value_at:value_at + length] if length else empty_value_for_VR(vr, raw=True)
                if tag == _SPECIFIC_CHARACTER_SET:
                    encoding = convert_encodings(convert_string(cast(bytes, value) or b"", little_endian))
                yield RawDataElement(BaseTag(tag), vr, length, cast(bytes | None, value), value_at, implicit_vr,
                                     little_endian)
            pos = end = value_at + length
    except DicomError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure is "cannot understand"
        raise DicomError(STATUS_CANNOT_UNDERSTAND, f"undecodable data set: {type(exc).__name__}") from None
    if end != size:
        raise DicomError(STATUS_CANNOT_UNDERSTAND, f"truncated data set: {size - end} stray byte(s)")


def _truncated(tag: int) -> NoReturn:
    raise DicomError(STATUS_CANNOT_UNDERSTAND, f"truncated data set: ({tag >> 16:04X},{tag & 0xFFFF:04X}) short")


def check_complete(encoded: bytes, implicit_vr: bool, little_endian: bool) -> None:
    """Raise DicomError unless every top-level element of the encoded data set is present to its full length."""
    for _ in _complete_elements(encoded, implicit_vr, little_endian):
        pass


def _convert(ds: Dataset) -> None:
    """Convert every element of ``ds`` and, depth first, of its sequences' items (pydicom converts an element,
    and parses a sequence's items, only when it is first read); DicomError (0xC000) for an element the exchange
    reads whose VR gives another kind of value than its dictionary VR."""
    for elem in ds:
        kinds = _READ_KINDS.get(elem.tag)
        if kinds is not None and _value_kind(elem.VR) not in kinds:
            raise DicomError(STATUS_CANNOT_UNDERSTAND,
                             f"{elem.keyword} sent as {elem.VR}, not {dictionary_VR(elem.tag)}")
        if elem.VR == "SQ":
            for item in elem.value:
                _convert(item)


def decode(encoded: bytes, transfer_syntax: str) -> Dataset:
    """Decode a C-STORE data set's header: the :data:`HEADER_KEYWORDS` elements, after checking that *every*
    element (pixel data included) arrived complete; DicomError 0xC000 when it did not or a header value
    cannot be converted.

    One pass over the encoded bytes: completeness check and header selection together.
    """
    ts = UID(transfer_syntax)
    if ts == pydicom.uid.DeflatedExplicitVRLittleEndian:
        import zlib

        try:
            encoded = zlib.decompress(encoded, -zlib.MAX_WBITS)
        except zlib.error:
            raise DicomError(STATUS_CANNOT_UNDERSTAND, "undecodable deflated data set") from None
        implicit, little = False, True
    else:
        implicit, little = ts.is_implicit_VR, ts.is_little_endian
    header = {elem.tag: elem for elem in _complete_elements(encoded, implicit, little)}
    try:
        encoding: str | list[str] = default_encoding
        charset = header.get(BaseTag(_SPECIFIC_CHARACTER_SET))
        if isinstance(charset, RawDataElement):
            encoding = convert_encodings(convert_raw_data_element(charset).value)
        ds = Dataset(header)
        ds.set_original_encoding(implicit, little, encoding)
        # Convert every kept element now, the items of its sequences included, so that a header value pydicom
        # cannot convert fails here (0xC000), not in the middle of instance_record.
        _convert(ds)
    except DicomError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DicomError(STATUS_CANNOT_UNDERSTAND, f"undecodable data set: {type(exc).__name__}") from None
    return ds


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _moment(day: Any, time_: Any, offset: Any) -> datetime | None:
    """DA + TM (+ TimezoneOffsetFromUTC) → aware datetime; without an offset, China Standard Time."""
    day = str(day or "").strip()
    if len(day) != 8 or not day.isdecimal():
        return None
    try:
        moment = datetime(int(day[:4]), int(day[4:6]), int(day[6:8]))
    except ValueError:
        return None
    t = str(time_ or "").strip().replace(":", "")
    if t:
        whole, _, fraction = t.partition(".")
        try:
            hh, mm, ss = int(whole[0:2] or 0), int(whole[2:4] or 0), int(whole[4:6] or 0)
            micro = int((fraction + "000000")[:6]) if fraction.isdecimal() else 0
            moment = moment.replace(hour=hh, minute=mm, second=min(ss, 59), microsecond=micro)
        except ValueError:
            pass
    zone = BEIJING
    off = str(offset or "").strip()
    # &ZZXX (PS3.3 C.7.6.1.1.3): a malformed offset, or one of a day or more, is no offset at all
    if len(off) == 5 and off[0] in "+-" and off[1:].isdecimal() and int(off[1:3]) < 24 and int(off[3:5]) < 60:
        delta = timedelta(hours=int(off[1:3]), minutes=int(off[3:5]))
        zone = timezone(delta if off[0] == "+" else -delta)
    return moment.replace(tzinfo=zone)


def _identifier_candidates(ds: Dataset) -> Iterable[tuple[str, str | None, Dataset]]:
    yield "PatientID", _text(ds, "PatientID"), ds
    for i, item in enumerate(ds.get("OtherPatientIDsSequence") or ()):
        yield f"OtherPatientIDsSequence[{i}]", _text(item, "PatientID"), item


def _is_resident_issuer(item: Dataset) -> bool:
    issuer = _text(item, "IssuerOfPatientID")
    if issuer and issuer in RESIDENT_ID_ISSUERS:
        return True
    for q in item.get("IssuerOfPatientIDQualifiersSequence") or ():
        if _text(q, "IdentifierTypeCode") == "NNCHN" or _text(q, "UniversalEntityID") in RESIDENT_ID_ISSUERS:
            return True
    return False


def patient_of(ds: Dataset, pseudonymizer: Pseudonymizer, patient_id_is_resident_id: bool = False) -> dict[str, Any]:
    """The pseudonymized patient; DicomError (0xC010/0xC011) without a valid, marked resident ID."""
    for where, value, item in _identifier_candidates(ds):
        marked = _is_resident_issuer(item) or (patient_id_is_resident_id and where == "PatientID")
        if not marked:
            continue
        if not value:
            raise DicomError(STATUS_NO_RESIDENT_ID, f"{where} marked as resident ID is empty")
        try:
            pseudonym = pseudonymizer.pseudonym(value)
        except InvalidResidentId as exc:
            raise DicomError(STATUS_BAD_RESIDENT_ID, f"{where}: {exc}") from None
        sex = {"M": "male", "F": "female", "O": "other"}.get((_text(ds, "PatientSex") or "").upper())
        birth = _text(ds, "PatientBirthDate") or ""
        year = int(birth[:4]) if len(birth) >= 4 and birth[:4].isdecimal() else None
        return {"pseudonym": pseudonym, "key_id": pseudonymizer.key_id,
                "sex": sex or ("unknown" if _text(ds, "PatientSex") else None),
                "birth_year": year if year and 1880 <= year <= 2200 else None}
    raise DicomError(STATUS_NO_RESIDENT_ID,
                     "no resident ID: IssuerOfPatientID NNCHN / 2.16.156.10011.1.3")


def _procedure_codes(ds: Dataset) -> list[list[str | None]]:
    codes = []
    for item in ds.get("ProcedureCodeSequence") or ():
        value = _text(item, "CodeValue") or _text(item, "LongCodeValue")
        if value:
            codes.append([value, _text(item, "CodingSchemeDesignator"), _text(item, "CodeMeaning")])
    return codes


def _classify(name: str, heading: str) -> str:
    """A TEXT item's own concept name decides; else the name of the CONTAINER it sits in."""
    for label in (name.lower(), heading.lower()):
        if any(w in label for w in IMPRESSION_WORDS):
            return "impression"
        if any(w in label for w in FINDING_WORDS):
            return "finding"
    return "other"


def _lines(text: str) -> str:
    """Text with its line ends as LF: DICOM text (ST, LT, UT) may end lines with CR LF, LF CR or CR alone."""
    return _LINE_ENDS.sub("\n", text).strip()


def _code_meaning(items: Any) -> str:
    return (_text(items[0], "CodeMeaning") or _text(items[0], "CodeValue") or "") if items else ""


def _number_text(value: Any) -> str:
    """A DS as it was written; an FD (or several) in its shortest exact form (``982``, not ``982.0``)."""
    if value is None:
        return ""
    if isinstance(value, (DSfloat, DSdecimal, str)):
        return str(value).strip()
    if isinstance(value, float):
        return f"{value:.17g}" if float(f"{value:.15g}") != value else f"{value:.15g}"
    if isinstance(value, (list, tuple, MultiValue)):
        return " ".join(_number_text(v) for v in value)
    return str(value)


def _measurement(name: str, value: Any, units: Any) -> str | None:
    """``name: value unit`` for a numeric measurement (UCUM units by code, others by meaning; unity left out)."""
    number = _number_text(value)
    if not number:
        return None
    unit = ""
    if units:
        scheme = _text(units[0], "CodingSchemeDesignator") or ""
        unit = (_text(units[0], "CodeValue") if scheme == "UCUM" else _code_meaning(units)) or ""
    unit = "" if unit in ("1", "no units") else unit
    return f"{name}: {number} {unit}".rstrip() if name else f"{number} {unit}".rstrip()


def _sr_text(ds: Dataset) -> tuple[str | None, str | None]:
    """Findings and impression from an SR's content tree (PS3.3 C.17.3), in document order.

    TEXT items give their text; NUM items ``name: value unit``; CODE items that the report CONTAINS (not
    concept modifiers) ``name: meaning``. Observation and acquisition context (observer, subject, device)
    is not report text and is skipped with everything below it. Unlabelled text counts as findings.
    """
    found: dict[str, list[str]] = {"finding": [], "impression": [], "other": []}

    def walk(items: Sequence[Dataset], heading: str) -> None:
        for item in items:
            # As text: a mutated item may carry several values (a MultiValue, unhashable), PS3.3 allows one.
            relationship = _text(item, "RelationshipType")
            if relationship in CONTEXT_RELATIONSHIPS:
                continue
            name = _code_meaning(item.get("ConceptNameCodeSequence"))
            kind = _text(item, "ValueType")
            line: str | None = None
            if kind == "TEXT" and _text(item, "TextValue"):
                line = _lines(str(item.TextValue))
            elif kind == "NUM":
                measured = item.get("MeasuredValueSequence") or ()
                if measured:
                    line = _measurement(name, measured[0].get("NumericValue"),
                                        measured[0].get("MeasurementUnitsCodeSequence"))
            elif kind == "CODE" and relationship == "CONTAINS":
                meaning = _code_meaning(item.get("ConceptCodeSequence"))
                line = f"{name}: {meaning}" if name and meaning else meaning or None
            if line:
                found[_classify(name, heading)].append(line)
            if "ContentSequence" in item:
                walk(item.ContentSequence, name if kind == "CONTAINER" and name else heading)

    walk(ds.get("ContentSequence") or (), "")
    findings = found["finding"] or found["other"]
    return ("\n".join(findings)[:20000] or None, "\n".join(found["impression"])[:8000] or None)


def _waveform_text(ds: Dataset) -> tuple[str | None, str | None]:
    """Findings and impression from a waveform's annotations (PS3.3 C.10.10, Waveform Annotation Module).

    Measurements (a concept name with a numeric value, e.g. ``QTc Interval: 370 ms``) are findings; the
    statements (free text, or coded statements by their meaning, e.g. ``Sinus rhythm``) are the
    interpretation: the impression. Annotations of single points or ranges of samples carry no value and
    are not report text.
    """
    measurements: list[str] = []
    statements: list[str] = []
    for item in ds.get("WaveformAnnotationSequence") or ():
        text = _text(item, "UnformattedTextValue")
        if text:
            statements.append(_lines(text))
        elif item.get("ConceptCodeSequence"):
            statements.append(_code_meaning(item.ConceptCodeSequence))
        elif item.get("NumericValue") is not None:
            line = _measurement(_code_meaning(item.get("ConceptNameCodeSequence")), item.NumericValue,
                                item.get("MeasurementUnitsCodeSequence"))
            if line:
                measurements.append(line)
    return ("\n".join(measurements)[:20000] or None, "\n".join(s for s in statements if s)[:8000] or None)


def _pdf_text(data: bytes) -> str | None:
    """The text of a PDF's pages (pypdf), or None when it has none (a scan) or cannot be read."""
    from pypdf import PdfReader  # imported on the first PDF: most instances are images

    try:
        reader = PdfReader(io.BytesIO(data))
        return "\n".join((page.extract_text() or "") for page in reader.pages).strip() or None
    except Exception:  # noqa: BLE001 - an unreadable PDF still is a PDF report
        log.warning("encapsulated PDF report: text extraction failed", exc_info=False)
        return None


def _report(ds: Dataset, sop_class: str) -> dict[str, Any] | None:
    when = (_moment(ds.get("ContentDate"), ds.get("ContentTime"), ds.get("TimezoneOffsetFromUTC"))
            or _moment(ds.get("InstanceCreationDate"), ds.get("InstanceCreationTime"),
                       ds.get("TimezoneOffsetFromUTC")))
    if sop_class.startswith(SR_PREFIX):
        findings, impression = _sr_text(ds)
        verified = (_text(ds, "CompletionFlag") == "COMPLETE" and _text(ds, "VerificationFlag") == "VERIFIED")
        return {"kind": "sr", "findings": findings, "impression": impression,
                "status": "final" if verified else "preliminary",
                "reported_at": when.isoformat() if when else None}
    if sop_class.startswith(WAVEFORM_PREFIX) and ds.get("WaveformAnnotationSequence"):
        findings, impression = _waveform_text(ds)
        if findings or impression:
            # A device's measurements and interpretation: unconfirmed until a physician signs a report.
            return {"kind": "waveform", "findings": findings, "impression": impression, "status": "preliminary",
                    "reported_at": when.isoformat() if when else None}
        return None
    if sop_class == ENCAPSULATED_PDF:
        document = ds.get("EncapsulatedDocument") or b""
        text = _pdf_text(bytes(document)) if document else None
        title = _text(ds, "DocumentTitle") or "PDF report"
        findings = text[:20000] if text else (f"[{title}: encapsulated PDF report, text not extracted; "
                                              "retrieve the study to read it]")
        # An encapsulated PDF carries no completion/verification flags; RIS export it once signed.
        return {"kind": "pdf", "findings": findings, "impression": None, "status": "final",
                "reported_at": when.isoformat() if when else None}
    return None


def instance_record(ds: Dataset, pseudonymizer: Pseudonymizer, *, context_sop_class: str | None = None,
                    patient_id_is_resident_id: bool = False) -> InstanceRecord:
    """Extract what the exchange keeps of one instance; DicomError with the C-STORE status otherwise."""
    sop_uid = _text(ds, "SOPInstanceUID")
    sop_class = _text(ds, "SOPClassUID")
    study_uid = _text(ds, "StudyInstanceUID")
    if not sop_uid or not sop_class:
        raise DicomError(STATUS_SOP_CLASS_MISMATCH, "SOPInstanceUID/SOPClassUID missing")
    if context_sop_class and sop_class != context_sop_class:
        raise DicomError(STATUS_SOP_CLASS_MISMATCH, "SOPClassUID differs from the presentation context")
    if not study_uid:
        raise DicomError(STATUS_SOP_CLASS_MISMATCH, "StudyInstanceUID missing")
    if len(study_uid) > 64 or not all(p.isdigit() for p in study_uid.split(".")):
        raise DicomError(STATUS_SOP_CLASS_MISMATCH, "StudyInstanceUID is not a valid UID")
    modality = _text(ds, "Modality")
    if not modality:
        raise DicomError(STATUS_SOP_CLASS_MISMATCH, "Modality missing")
    patient = patient_of(ds, pseudonymizer, patient_id_is_resident_id)
    study_at = _moment(ds.get("StudyDate"), ds.get("StudyTime"), ds.get("TimezoneOffsetFromUTC"))
    image_type = [str(v).upper() for v in (ds.get("ImageType") or ())]
    contrast = bool(_text(ds, "ContrastBolusAgent") or ds.get("ContrastBolusAgentSequence"))
    return InstanceRecord(
        sop_instance_uid=sop_uid, sop_class_uid=sop_class, study_instance_uid=study_uid,
        series_instance_uid=_text(ds, "SeriesInstanceUID"), modality=modality.upper()[:16], patient=patient,
        accession_number=(_text(ds, "AccessionNumber") or "")[:64] or None,
        body_part=(_text(ds, "BodyPartExamined") or "")[:64] or None,
        contrast=contrast, localizer="LOCALIZER" in image_type,
        description=(_text(ds, "StudyDescription") or "")[:256] or None,
        procedure_codes=_procedure_codes(ds), study_at=study_at.isoformat() if study_at else None,
        report=_report(ds, sop_class))


# ----------------------------------------------------------------------------------------------- assembly

def _most_common(values: Iterable[str | None]) -> str | None:
    counted = Counter(v for v in values if v)
    return counted.most_common(1)[0][0] if counted else None


@functools.cache
def waveform_shapes() -> dict[str, tuple[str, str]]:
    """SOP Class UID → (body part, technique) of the waveform classes in :data:`WAVEFORM_SHAPES_FILE`."""
    with WAVEFORM_SHAPES_FILE.open(encoding="utf-8") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {row["sop_class_uid"]: (row["body_part"], row["technique"]) for row in rows}


def waveform_shape(records: Sequence[InstanceRecord]) -> tuple[str, str] | None:
    """(body part, technique) when every instance is a waveform of one class that fixes them (a 12-lead ECG
    is a resting ECG of the heart), else None: the study's shape is then read from its images."""
    shapes = {waveform_shapes().get(r.sop_class_uid) for r in records}
    if len(shapes) != 1:
        return None
    return shapes.pop()


def technique(records: Sequence[InstanceRecord]) -> str:
    """plain / contrast / plain+contrast from the Contrast/Bolus module, judged per series.

    A series is enhanced when any of its instances names a ContrastBolusAgent (or agent sequence);
    localizer (scout) series are ignored. All enhanced → contrast; some → plain+contrast; none → plain.
    """
    series: dict[str, bool] = {}
    for r in records:
        if r.modality in NON_IMAGE_MODALITIES or r.localizer:
            continue
        key = r.series_instance_uid or r.sop_instance_uid
        series[key] = series.get(key, False) or r.contrast
    if not series or not any(series.values()):
        return "plain"
    return "contrast" if all(series.values()) else "plain+contrast"


def build_report(records: Sequence[InstanceRecord], *, institution: str, version: int, result_id: str | None,
                 previous_status: str | None, retrieval: dict[str, Any] | None,
                 received_at: datetime) -> ImagingReport:
    """One study's instances → the report the pipeline turns into an ``hr.imaging-result.v1`` event."""
    if not records:
        raise ValueError("a study needs at least one instance")
    first = records[0]
    images = [r for r in records if r.modality not in NON_IMAGE_MODALITIES] or list(records)
    reports = [r.report for r in records if r.report]
    modality = _most_common(r.modality for r in images) or first.modality
    accession = _most_common(r.accession_number for r in records)
    study_at = min((datetime.fromisoformat(r.study_at) for r in records if r.study_at), default=None)
    codes = []
    seen: set[tuple[str | None, str | None]] = set()
    for r in records:
        for value, scheme, meaning in r.procedure_codes:
            if (value, scheme) not in seen:
                seen.add((value, scheme))
                codes.append(Code(str(value), scheme, meaning))
    findings = "\n\n".join(x["findings"] for x in reports if x.get("findings"))[:20000] or None
    impression = "\n\n".join(x["impression"] for x in reports if x.get("impression"))[:8000] or None
    status = "final" if any(x["status"] == "final" for x in reports) else "preliminary"
    if previous_status in ("final", "amended") and version > 1:
        status = "amended"
    report_times = [datetime.fromisoformat(x["reported_at"]) for x in reports if x.get("reported_at")]
    reported_at = max(report_times) if report_times else (study_at or received_at)
    series = {r.series_instance_uid for r in images if r.series_instance_uid}
    waveform = waveform_shape(images)
    body_part = _most_common(r.body_part for r in images) or (waveform[0] if waveform else None)
    study = Study(study_instance_uid=first.study_instance_uid, modality=modality, accession_number=accession,
                  body_part=body_part, technique=waveform[1] if waveform else technique(records),
                  description=_most_common(r.description for r in records), series_count=len(series) or None,
                  instance_count=len(records), study_at=study_at)
    patient = first.patient
    return ImagingReport(
        institution=institution, result_id=result_id or accession or first.study_instance_uid, version=version,
        # DICOM pseudonymizes on arrival (the spool keeps no resident ID): the report carries the pseudonym.
        status=status, patient=PseudonymizedPatient(patient["pseudonym"], patient["key_id"], patient.get("sex"),
                                                    patient.get("birth_year"), "PatientID"),
        study=study, reported_at=reported_at, codes=codes, findings=findings, impression=impression,
        retrieval=retrieval, message_id=first.study_instance_uid, location=f"study {first.study_instance_uid}")


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_day(text: str) -> date:
    return datetime.strptime(text, "%Y%m%d").date()
