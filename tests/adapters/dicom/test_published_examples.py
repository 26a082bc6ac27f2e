"""Regression corpus: pydicom's bundled test files through the real DICOM metadata decoder and study assembly.

The files are read by path from the installed pydicom package (``data/test_files``, ``data/charset_files``;
never ``get_testdata_file``, which may download). Each is run twice, as the SCP would meet it — the data set's
bytes through :func:`~adapters.dicom.metadata.decode` and :func:`~adapters.dicom.metadata.instance_record`,
then :func:`~adapters.dicom.metadata.build_report` and the shared pipeline's imaging event: as published, and
localised (:func:`localise`). Each run has its expected outcome: refused with which C-STORE status and
message, or stored with which modality, body part, description, technique, status, report text and unified
item (or why none). pydicom bundles no encapsulated PDF: one is built here from a PDF written with pypdf and
named as derived, like the other derived variants. A few are sent with dcmtk's storescu to the real SCP.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian, generate_uid

from adapters.dicom.metadata import (
    STATUS_NO_RESIDENT_ID,
    STATUS_SOP_CLASS_MISMATCH,
    DicomError,
    build_report,
    decode,
    instance_record,
)
from adapters.pipeline import ResultPipeline
from schemas import events
from schemas.topics import TOPIC_IMAGING
from tests.fakes import FakePublisher

from . import dicomdata as dd
from .peers import INSTITUTION, storescu

pytestmark = pytest.mark.filterwarnings("ignore:End of file reached before delimiter")

DATA = Path(pydicom.__file__).parent / "data"
TEST_FILES = DATA / "test_files"
CHARSET_FILES = DATA / "charset_files"
RESIDENT_ID = "110105198003120024"
NO_RESIDENT_ID = "no resident ID: IssuerOfPatientID NNCHN / 2.16.156.10011.1.3"
UNKNOWN_SHAPE = "unknown_code"  # no unified item for this procedure / study shape


def localise(source: Path, path: Path, resident_id: str = RESIDENT_ID) -> Path:
    """The file with only what the exchange needs added: an OtherPatientIDsSequence item holding the resident
    ID with IssuerOfPatientID NNCHN (PatientID and the rest stay as published), in the same transfer syntax."""
    ds = pydicom.dcmread(source)
    resident = Dataset()
    resident.PatientID, resident.IssuerOfPatientID = resident_id, "NNCHN"
    ds.OtherPatientIDsSequence = Sequence([*(ds.get("OtherPatientIDsSequence") or ()), resident])
    ds.save_as(path)
    return path


def _encoded(path: Path) -> tuple[bytes, str]:
    """The data set's bytes after the file meta header, and its transfer syntax: what a C-STORE carries."""
    return path.read_bytes()[dd._body_offset(path):], str(pydicom.dcmread(path, stop_before_pixels=True)
                                                            .file_meta.TransferSyntaxUID)


@dataclass(frozen=True)
class Refused:
    status: int
    message: str


@dataclass(frozen=True)
class Stored:
    """One study's ``hr.imaging-result.v1`` event; ``result_id`` None means the Study Instance UID."""

    modality: str
    body_part: str | None
    description: str | None
    technique: str
    status: str
    result_id: str | None
    item: str | None
    item_issue: str | None  # why the study has no unified item (mapping_issue_code)
    study_at: str | None
    findings: str | None = None
    impression: str | None = None


@dataclass(frozen=True)
class Case:
    name: str  # a file of data/test_files or data/charset_files
    published: Refused
    localised: Stored | Refused

    @property
    def path(self) -> Path:
        return next(p for p in (TEST_FILES / self.name, CHARSET_FILES / self.name) if p.exists())


def _ot(study_at: str | None = None) -> Stored:
    """A secondary capture of the charset files: modality OT, no body part, no description."""
    return Stored("OT", None, None, "plain", "preliminary", None, None, UNKNOWN_SHAPE, study_at)


CR_CHEST = Stored("CR", "CHEST", "Chest", "plain", "preliminary", "2008050417172310", "I0139", None,
                  "2008-05-04T17:17:15+08:00")
MR = Stored("MR", None, None, "plain", "preliminary", None, None, UNKNOWN_SHAPE, "2004-08-26T18:50:59-04:00")
TEST_SR_FINDINGS = "\n".join([
    "A mass of", "Diameter: 3 Length Unit", "was detected.",  # the NUM item between two TEXT items
    "A mass of", "Diameter: 3 Length Unit", "was detected.",
    "Sample Text\nA\nB\nC",  # written with CR, CR LF and LF CR line ends
    "Inferred Sample Text\nNew line.\n&%$§\"!()<>{}/;",
    "Sample Text 2"])
ECG_FINDINGS = "\n".join(["RR Interval: 982 ms", "PP Interval: 0 ms", "PR Interval: 161 ms", "QRS Duration: 75 ms",
                          "QT Interval: 368 ms", "QTc Interval: 370 ms", "P Axis: 74 deg", "QRS Axis: 52 deg",
                          "T Axis: 57 deg"])

CASES = [
    # CT_small names its contrast agent but no body part; its time carries TimezoneOffsetFromUTC -0500.
    Case("CT_small.dcm", Refused(STATUS_NO_RESIDENT_ID, NO_RESIDENT_ID),
         Stored("CT", None, "e+1", "contrast", "preliminary", None, None, UNKNOWN_SHAPE, "2004-01-19T07:27:30-05:00")),
    Case("MR_small.dcm", Refused(STATUS_NO_RESIDENT_ID, NO_RESIDENT_ID), MR),
    Case("MR_small_implicit.dcm", Refused(STATUS_NO_RESIDENT_ID, NO_RESIDENT_ID), MR),
    Case("MR_small_bigendian.dcm", Refused(STATUS_NO_RESIDENT_ID, NO_RESIDENT_ID), MR),
    # A Comprehensive SR, COMPLETE and VERIFIED: final.
    Case("test-SR.dcm", Refused(STATUS_NO_RESIDENT_ID, NO_RESIDENT_ID),
         Stored("SR", None, "OFFIS Structured Reporting Test Document", "plain", "final", None, None, UNKNOWN_SHAPE,
                None, TEST_SR_FINDINGS)),
    # A Basic Text SR template, PARTIAL and UNVERIFIED: its observer's organisation (observation context,
    # "Enter text") is not report text, its one report text is.
    Case("reportsi.dcm", Refused(STATUS_NO_RESIDENT_ID, NO_RESIDENT_ID),
         Stored("SR", None, "OFFIS Structured Reporting Templates", "plain", "preliminary", None, None,
                UNKNOWN_SHAPE, None, "Enter text")),
    # A 12-lead ECG: a resting ECG of the heart (F0001); the device's measurements and interpretation.
    Case("waveform_ecg.dcm", Refused(STATUS_NO_RESIDENT_ID, NO_RESIDENT_ID),
         Stored("ECG", "HEART", "ECG", "resting", "preliminary", "03028041970546", "F0001", None,
                "2013-01-25T10:59:19+08:00", ECG_FINDINGS, "RITMO SINUSALE\nECG NORMALE")),
    *(Case(name, Refused(STATUS_NO_RESIDENT_ID, NO_RESIDENT_ID), _ot())
      for name in ("chrArab.dcm", "chrFren.dcm", "chrFrenMulti.dcm", "chrGerm.dcm", "chrGreek.dcm", "chrH31.dcm",
                   "chrH32.dcm", "chrHbrw.dcm", "chrI2.dcm", "chrRuss.dcm", "chrX1.dcm", "chrX2.dcm")),
    # Computed radiography of the chest (CR → DX through imaging_aliases.csv): 胸部 X 线 I0139.
    *(Case(name, Refused(STATUS_NO_RESIDENT_ID, NO_RESIDENT_ID), CR_CHEST)
      for name in ("chrJapMulti.dcm", "chrJapMultiExplicitIR6.dcm", "chrKoreanMulti.dcm")),
    # Minimal data sets built to test sequence encodings: no SOP instance at all.
    *(Case(name, Refused(STATUS_SOP_CLASS_MISMATCH, "SOPInstanceUID/SOPClassUID missing"),
           Refused(STATUS_SOP_CLASS_MISMATCH, "SOPInstanceUID/SOPClassUID missing"))
      for name in ("chrSQEncoding.dcm", "chrSQEncoding1.dcm")),
]


def _event(paths: list[Path], pseudonymizer, book) -> dict:  # type: ignore[no-untyped-def,type-arg]
    records = [instance_record(decode(*_encoded(p)), pseudonymizer) for p in paths]
    report = build_report(records, institution=INSTITUTION, version=1, result_id=None, previous_status=None,
                          retrieval=None, received_at=datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
    return ResultPipeline(book, pseudonymizer).imaging_event(report, "dicom")


def _check(event: dict, expected: Stored) -> None:  # type: ignore[type-arg]
    events.validate("imaging-result.v1", event)
    assert RESIDENT_ID not in json.dumps(event, ensure_ascii=False)
    study = event["study"]
    assert (study["modality"], study["body_part"], study["description"], study["technique"], event["status"]) == (
        expected.modality, expected.body_part, expected.description, expected.technique, expected.status)
    assert event["result_id"] == (expected.result_id or study["study_instance_uid"])
    assert (event["item"]["unified_code"], event["item"]["mapping_issue_code"]) == (expected.item, expected.item_issue)
    assert study["study_at"] == expected.study_at
    report = event["report"] or {"findings": None, "impression": None}
    assert (report["findings"], report["impression"]) == (expected.findings, expected.impression)


def _expect(path: Path, expected: Stored | Refused, pseudonymizer, book) -> None:  # type: ignore[no-untyped-def]
    if isinstance(expected, Refused):
        with pytest.raises(DicomError) as info:
            _event([path], pseudonymizer, book)
        assert (info.value.status, info.value.message) == (expected.status, expected.message)
        return
    _check(_event([path], pseudonymizer, book), expected)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_pydicom_test_files(tmp_path, pseudonymizer, book, case: Case) -> None:  # type: ignore[no-untyped-def]
    _expect(case.path, case.published, pseudonymizer, book)
    localised = localise(case.path, tmp_path / case.name)
    assert _encoded(localised)[1] == _encoded(case.path)[1]  # the transfer syntax as published
    _expect(localised, case.localised, pseudonymizer, book)


def test_gb18030_text_is_decoded_by_its_character_set(tmp_path, pseudonymizer, book) -> None:  # type: ignore[no-untyped-def]
    """Derived: chrX2.dcm (GB18030) made a chest CT with a Chinese study description (LO: in GB18030)."""
    ds = pydicom.dcmread(localise(CHARSET_FILES / "chrX2.dcm", tmp_path / "x2.dcm"))
    ds.Modality, ds.BodyPartExamined, ds.StudyDescription = "CT", "CHEST", "胸部 CT 平扫"
    ds.save_as(tmp_path / "x2-zh.dcm")
    assert "胸部 CT 平扫".encode("gb18030") in (tmp_path / "x2-zh.dcm").read_bytes()
    _check(_event([tmp_path / "x2-zh.dcm"], pseudonymizer, book),
           Stored("CT", "CHEST", "胸部 CT 平扫", "plain", "preliminary", None, "I0013", None, None))


PDF_TEXT = "CT chest with contrast: no nodule, no effusion.\nImpression: normal chest CT."


def pdf_document(lines: list[str]) -> bytes:
    """A one-page PDF whose text is ``lines`` (Helvetica), written with pypdf's public API."""
    from pypdf import PdfWriter
    from pypdf.generic import ContentStream, DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(width=595, height=842)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
    shown = " T* ".join("(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj"
                        for line in lines)
    content = DecodedStreamObject()
    content.set_data(f"BT /F1 11 Tf 14 TL 72 760 Td {shown} ET".encode("latin-1"))
    page.replace_contents(ContentStream(content, writer))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def encapsulated_pdf(study: Path, path: Path, document: bytes) -> Path:
    """Derived: an Encapsulated PDF Storage instance holding ``document`` in the patient and study of ``study``."""
    source = pydicom.dcmread(study, stop_before_pixels=True)
    ds = Dataset()
    for keyword in ("SpecificCharacterSet", "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                    "OtherPatientIDsSequence", "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                    "StudyDescription", "TimezoneOffsetFromUTC"):
        if keyword in source:
            setattr(ds, keyword, source.data_element(keyword).value)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = EncapsulatedPDFStorage, generate_uid(), generate_uid()
    ds.Modality, ds.DocumentTitle, ds.MIMETypeOfEncapsulatedDocument = "DOC", "CT report", "application/pdf"
    ds.ContentDate, ds.ContentTime = source.StudyDate, "093000"
    ds.BurnedInAnnotation = "YES"
    ds.EncapsulatedDocument = document + (b"\0" if len(document) % 2 else b"")  # OB: even length
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def test_encapsulated_pdf_text_becomes_the_findings(tmp_path, pseudonymizer, book) -> None:  # type: ignore[no-untyped-def]
    """Derived: CT_small (localised) and a PDF report in its study: the study is final, the PDF's text its
    findings (as pypdf extracts it), reported at the PDF's content time."""
    ct = localise(TEST_FILES / "CT_small.dcm", tmp_path / "ct.dcm")
    pdf = encapsulated_pdf(ct, tmp_path / "pdf.dcm", pdf_document(PDF_TEXT.split("\n")))
    event = _event([ct, pdf], pseudonymizer, book)
    _check(event, Stored("CT", None, "e+1", "contrast", "final", None, None, UNKNOWN_SHAPE,
                         "2004-01-19T07:27:30-05:00", PDF_TEXT))
    assert event["reported_at"] == "2004-01-19T09:30:00-05:00"
    # a PDF without text (a scanned report): the note that it exists, the study still final
    scanned = encapsulated_pdf(ct, tmp_path / "scan.dcm", pdf_document([]))
    _check(_event([ct, scanned], pseudonymizer, book),
           Stored("CT", None, "e+1", "contrast", "final", None, None, UNKNOWN_SHAPE, "2004-01-19T07:27:30-05:00",
                  "[CT report: encapsulated PDF report, text not extracted; retrieve the study to read it]"))


@pytest.mark.integration
def test_published_and_localised_files_over_c_store(tmp_path, dcmtk, book, pseudonymizer,  # type: ignore[no-untyped-def]
                                                     start_receiver) -> None:
    """storescu sends the published CT (refused: no resident ID), then localised CT + PDF report, SR, ECG and a
    GB18030 file; each study is published once as the in-process runs above expect."""
    publisher = FakePublisher()
    receiver = start_receiver(ResultPipeline(book, pseudonymizer, publisher), assemble=False)
    ct = localise(TEST_FILES / "CT_small.dcm", tmp_path / "ct.dcm")
    files = [TEST_FILES / "CT_small.dcm", ct, encapsulated_pdf(ct, tmp_path / "pdf.dcm", pdf_document([PDF_TEXT])),
             *(localise(TEST_FILES / n, tmp_path / n) for n in ("test-SR.dcm", "waveform_ecg.dcm")),
             localise(CHARSET_FILES / "chrX2.dcm", tmp_path / "chrX2.dcm")]
    _, responses, out = storescu(receiver.port, files)
    assert responses == ["Error: CannotUnderstand"] + ["Success"] * 5, out
    assert receiver.handler.stats.failed == 1 and receiver.handler.stats.stored == 5
    assert receiver.assembler.assemble_once(now=datetime.now(UTC).timestamp() + 3600) == 4
    by_uid = {e["study"]["study_instance_uid"]: e for e in publisher.events(TOPIC_IMAGING)}
    expected = {
        pydicom.dcmread(ct).StudyInstanceUID: Stored("CT", None, "e+1", "contrast", "final", None, None, UNKNOWN_SHAPE,
                                                     "2004-01-19T07:27:30-05:00", PDF_TEXT),
        pydicom.dcmread(TEST_FILES / "test-SR.dcm").StudyInstanceUID: next(
            c.localised for c in CASES if c.name == "test-SR.dcm"),
        pydicom.dcmread(TEST_FILES / "waveform_ecg.dcm").StudyInstanceUID: next(
            c.localised for c in CASES if c.name == "waveform_ecg.dcm"),
        pydicom.dcmread(CHARSET_FILES / "chrX2.dcm").StudyInstanceUID: _ot(),
    }
    assert set(by_uid) == set(expected)
    for uid, stored in expected.items():
        _check(by_uid[uid], stored)  # type: ignore[arg-type]
