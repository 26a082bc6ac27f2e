"""Data sets on which ``python -m fuzz dicom`` found the C-STORE handler failing with an internal error
(tests/data/dicom/fuzz-crashes/, each as the P-DATA of a C-STORE carries it): each must now be refused by
:func:`~adapters.dicom.metadata.decode` with 0xC000, the status of a data set that cannot be understood."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian
from pynetdicom.dsutils import encode

from adapters.dicom.metadata import STATUS_CANNOT_UNDERSTAND, DicomError, decode, instance_record
from adapters.pseudonymize import Pseudonymizer

from . import dicomdata as dd

CRASHES = Path(__file__).parent.parent.parent / "data" / "dicom" / "fuzz-crashes"
VALUE_TYPE_CS = b"\x40\x00\x40\xa0CS"  # (0040,A040) ValueType, explicit VR CS, little endian

# The data sets are mutated ones: pydicom warns about their values before refusing them.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")


def test_an_sr_content_item_of_unknown_vr_is_refused_when_decoded() -> None:
    # ValueType of a ContentSequence item with VR "C\0": pydicom converted it only when instance_record read it.
    data_set = (CRASHES / "sr-content-item-unknown-vr-explicit-le.bin").read_bytes()
    with pytest.raises(DicomError) as refused:
        decode(data_set, ExplicitVRLittleEndian)
    assert refused.value.status == STATUS_CANNOT_UNDERSTAND


def test_every_nested_item_is_converted_by_decode(tmp_path: Path, pseudonymizer: Pseudonymizer) -> None:
    ds = pydicom.dcmread(dd.ct_study(tmp_path, slices=1).files[-1])  # the study's SR report
    del ds.file_meta
    good = encode(ds, False, True)
    assert instance_record(decode(good, ExplicitVRLittleEndian), pseudonymizer).report["kind"] == "sr"
    # the second ValueType is the first content item's (the first is the document's own CONTAINER)
    at = good.index(VALUE_TYPE_CS, good.index(VALUE_TYPE_CS) + 1)
    bad = good[:at + 4] + b"C\x00" + good[at + 6:]
    with pytest.raises(DicomError) as refused:
        decode(bad, ExplicitVRLittleEndian)
    assert refused.value.status == STATUS_CANNOT_UNDERSTAND


@pytest.mark.parametrize(("name", "comment"), [
    # instance_record iterated the characters of the text as if they were the sequence's items
    ("procedure-code-sequence-sent-as-lo-explicit-be.bin", "ProcedureCodeSequence sent as LO, not SQ"),
    # a single IS value is an int to pydicom: instance_record iterated it as ImageType's values
    ("image-type-sent-as-is-explicit-be.bin", "ImageType sent as IS, not CS"),
])
def test_an_element_sent_with_a_vr_of_another_kind_is_refused_when_decoded(name: str, comment: str) -> None:
    with pytest.raises(DicomError) as refused:
        decode((CRASHES / name).read_bytes(), ExplicitVRBigEndian)
    assert refused.value.status == STATUS_CANNOT_UNDERSTAND and refused.value.comment == comment


@pytest.mark.parametrize(("keyword", "vr", "value"), [
    ("ProcedureCodeSequence", "LO", "CT^chest"),  # iterated as items
    ("ImageType", "US", 5),  # iterated as values
    ("ImageType", "IS", 5),  # a decimal string is a number to pydicom: as above (found by fuzzing)
    ("EncapsulatedDocument", "UL", 16),  # copied as bytes: bytes(16), or 4 GiB for 0xFFFFFFFF
    ("StudyDescription", "SQ", []),  # read as text
])
def test_an_element_read_must_carry_a_value_of_its_dictionary_kind(tmp_path: Path, keyword: str, vr: str,
                                                                   value: object) -> None:
    ds = pydicom.dcmread(dd.ct_study(tmp_path, slices=1, with_report=False).files[0], stop_before_pixels=True)
    del ds.file_meta
    if keyword in ds:
        del ds[keyword]
    ds.add_new(keyword, vr, value)
    with pytest.raises(DicomError) as refused:
        decode(encode(ds, False, True), ExplicitVRLittleEndian)
    assert refused.value.status == STATUS_CANNOT_UNDERSTAND
    assert refused.value.comment.startswith(f"{keyword} sent as {vr}")


def test_a_text_vr_other_than_the_dictionary_one_is_still_read(tmp_path: Path,
                                                               pseudonymizer: Pseudonymizer) -> None:
    # senders mix up string VRs (LO for SH, ST for LO): what is read stays text, so the data set is kept
    ds = pydicom.dcmread(dd.ct_study(tmp_path, slices=1, with_report=False).files[0], stop_before_pixels=True)
    del ds.file_meta
    del ds["AccessionNumber"]
    ds.add_new("AccessionNumber", "LO", "ACC-LO-1")
    record = instance_record(decode(encode(ds, False, True), ExplicitVRLittleEndian), pseudonymizer)
    assert record.accession_number == "ACC-LO-1"


def test_a_birth_date_with_a_superscript_digit_has_no_birth_year(pseudonymizer: Pseudonymizer) -> None:
    # PatientBirthDate "1¹80…": "¹".isdigit() is true, int("1¹80") raised ValueError in instance_record
    data_set = (CRASHES / "patient-birth-date-superscript-digit-explicit-be.bin").read_bytes()
    record = instance_record(decode(data_set, ExplicitVRBigEndian), pseudonymizer)
    assert record.patient["birth_year"] is None and record.report is not None


@pytest.mark.parametrize(("keyword", "value"), [("StudyDate", "２０２４0101"), ("StudyDate", "2⁰24０101"),
                                                ("TimezoneOffsetFromUTC", "+2500"), ("TimezoneOffsetFromUTC", "-0099")])
def test_dates_and_offsets_that_are_no_numbers_are_not_read(tmp_path: Path, pseudonymizer: Pseudonymizer,
                                                             keyword: str, value: str) -> None:
    ds = pydicom.dcmread(dd.ct_study(tmp_path, slices=1, with_report=False).files[0], stop_before_pixels=True)
    del ds.file_meta
    if keyword in ds:
        del ds[keyword]
    ds.add_new(keyword, "LO", value)  # a text VR that carries any character (the set is ISO_IR 192: UTF-8)
    record = instance_record(decode(encode(ds, False, True), ExplicitVRLittleEndian), pseudonymizer)
    if keyword == "TimezoneOffsetFromUTC":  # not an offset: China Standard Time, as without one
        assert record.study_at is not None and record.study_at.endswith("+08:00")
    else:  # full-width digits are digits; a superscript one is not
        assert (record.study_at or "").startswith("2024-01-01") == value.isdecimal()


@pytest.mark.parametrize("keyword", ["RelationshipType", "ValueType"])
def test_an_sr_content_item_with_several_values_where_one_is_allowed_is_read(tmp_path: Path, keyword: str,
                                                                             pseudonymizer: Pseudonymizer) -> None:
    # Found by fuzzing: RelationshipType sent with two values became an unhashable MultiValue in a set lookup.
    ds = pydicom.dcmread(dd.ct_study(tmp_path, slices=1).files[-1])  # the study's SR report
    del ds.file_meta
    item = ds.ContentSequence[0]
    setattr(item, keyword, [str(item.get(keyword)), "CONTAINS"])
    record = instance_record(decode(encode(ds, False, True), ExplicitVRLittleEndian), pseudonymizer)
    assert record.report is not None and record.report["kind"] == "sr"
