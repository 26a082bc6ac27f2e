"""Test DICOM files: pydicom's bundled CT and MR images, made into a Chinese hospital's studies.

The bundled files are read by path (they ship inside the pydicom package). The copies get a valid resident
ID marked by IssuerOfPatientID, a body part and an accession number; an SR report is generated for the CT
study; broken variants (truncated, corrupt) are cut from the good ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from schemas.resident_id import make_resident_id

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
CT_SMALL = TEST_FILES / "CT_small.dcm"
MR_SMALL = TEST_FILES / "MR_small.dcm"
RID_CT = make_resident_id("11010519800312002")
RID_MR = make_resident_id("44030419751105123")
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


@dataclass
class Study:
    uid: str
    files: list[Path]
    accession: str | None


def ct_study(directory: Path, slices: int = 3, accession: str = "ACC-CT-1", resident_id: str = RID_CT,
             body_part: str = "CHEST", with_report: bool = True, verified: bool = True) -> Study:
    """``slices`` contrast-enhanced chest CT images (+ a Basic Text SR) in one new study."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    for i in range(slices):
        ds = pydicom.dcmread(CT_SMALL)
        ds.PatientID = resident_id
        ds.IssuerOfPatientID = "NNCHN"
        ds.PatientBirthDate = resident_id[6:14]
        ds.PatientSex = "F"
        ds.BodyPartExamined = body_part
        ds.AccessionNumber = accession
        ds.StudyDescription = "CT 胸部增强"
        ds.SpecificCharacterSet = "ISO_IR 192"
        del ds.TimezoneOffsetFromUTC  # the bundled file says -0500; a Chinese hospital's is usually absent
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        path = directory / f"ct-{i + 1}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    if with_report:
        template = pydicom.dcmread(files[0], stop_before_pixels=True)
        files.append(sr_report(directory / "sr.dcm", template, verified=verified))
    return Study(study_uid, files, accession)


def mr_study(directory: Path, resident_id: str = RID_MR) -> Study:
    """A plain brain MR whose resident ID is in OtherPatientIDsSequence (PatientID is the hospital MRN)."""
    directory.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(MR_SMALL)
    ds.PatientID = "MRN-0042"
    ds.IssuerOfPatientID = "HOSPITAL-MRN"
    other = Dataset()
    other.PatientID = resident_id
    other.IssuerOfPatientID = "2.16.156.10011.1.3"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.BodyPartExamined = "BRAIN"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if "AccessionNumber" in ds:
        del ds.AccessionNumber
    path = directory / "mr.dcm"
    ds.save_as(path, enforce_file_format=True)
    return Study(ds.StudyInstanceUID, [path], None)


def _text_item(relationship: str, name: str, text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([_code("121071" if "Finding" in name else "121073", "DCM", name)])
    item.TextValue = text
    return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def sr_report(path: Path, study: Dataset, verified: bool = True) -> Path:
    """A Basic Text SR (Findings + Impression) in ``study``'s study and patient."""
    ds = Dataset()
    for keyword in ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
                    "ReferringPhysicianName", "StudyDescription"):
        if keyword in study:
            setattr(ds, keyword, study.data_element(keyword).value)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.Manufacturer = "HRX test"
    ds.ContentDate, ds.ContentTime = study.StudyDate, "093000"
    ds.CompletionFlag = "COMPLETE" if verified else "PARTIAL"
    ds.VerificationFlag = "VERIFIED" if verified else "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic imaging report")])
    ds.ContentSequence = Sequence([
        _text_item("CONTAINS", "Finding", "右肺上叶见一磨玻璃结节，约 6 mm。"),
        _text_item("CONTAINS", "Impression", "右肺上叶磨玻璃结节，建议随访。"),
    ])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def truncated(source: Path, path: Path, cut: int = 500) -> Path:
    """The file without its last ``cut`` bytes (a sender that crashed mid-write)."""
    path.write_bytes(source.read_bytes()[:-cut])
    return path


def corrupt(source: Path, path: Path) -> Path:
    """A valid file meta header followed by a data set whose element lengths are garbage."""
    raw = bytearray(source.read_bytes())
    start = _body_offset(source)
    raw[start + 200:start + 240] = b"\xff" * 40
    path.write_bytes(bytes(raw))
    return path


def _body_offset(source: Path) -> int:
    from pydicom.filereader import _read_file_meta_info, read_preamble

    with open(source, "rb") as fh:
        read_preamble(fh, False)
        _read_file_meta_info(fh)
        return fh.tell()
