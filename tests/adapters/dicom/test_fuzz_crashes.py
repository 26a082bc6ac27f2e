"""Data sets on which ``python -m fuzz dicom`` found the C-STORE handler failing with an internal error
(tests/data/dicom/fuzz-crashes/, each as the P-DATA of a C-STORE carries it): each must now be refused by
:func:`~adapters.dicom.metadata.decode` with 0xC000, the status of a data set that cannot be understood."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
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
