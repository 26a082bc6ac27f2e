"""DICOM harness: the data set of a C-STORE request → the instance's metadata record → the study's report
→ the event.

An input is one byte choosing how the data set is encoded, then the data set as it arrives in the P-DATA of
a C-STORE (no preamble, no file meta): the byte's two low bits pick the transfer syntax (implicit VR little
endian, explicit VR little endian, explicit VR big endian, deflated explicit VR little endian) and bit 2 the
SCP's ``--patient-id-is-resident-id``. The steps are the SCP's (``adapters/dicom/scp.py``):
:func:`~adapters.dicom.metadata.decode`, :func:`~adapters.dicom.metadata.instance_record`, the record as the
spool writes and reads it back (JSON), then the assembler's (``adapters/dicom/spool.py``) for a study of that
one instance: :func:`~adapters.dicom.metadata.build_report` and the pipeline's ``imaging_event``.

Contract: decoding and the record raise only :class:`~adapters.dicom.metadata.DicomError` (the C-STORE's
failure status); the report and the event only :class:`~adapters.pipeline.AdapterError` (the assembler's
dead letter). Anything else would be a C-STORE answered 0xC000 "internal error", or a study the assembler
retries for ever.
"""
from __future__ import annotations

from datetime import UTC, datetime

import orjson

from fuzz.harness import FUZZ_KEY, fuzz, instrumented

with instrumented("pydicom"):
    from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                             ImplicitVRLittleEndian)

    from adapters.dicom.metadata import DicomError, InstanceRecord, build_report, decode, instance_record
    from adapters.report import AdapterError
    from adapters.pipeline import ResultPipeline
    from adapters.pseudonymize import Pseudonymizer
    from codes import load_codebook

TRANSFER_SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                     DeflatedExplicitVRLittleEndian)
PATIENT_ID_IS_RESIDENT_ID = 0b100
PSEUDONYMIZER = Pseudonymizer(FUZZ_KEY)
#: Fixed, so that a crashing input replays exactly.
RECEIVED_AT = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
PIPELINE = ResultPipeline(load_codebook(), PSEUDONYMIZER, received_at=RECEIVED_AT)
#: The SCP's ``--institution``: a hospital of the test studies (tests/adapters/dicom).
INSTITUTION = "bj-xicheng-001"


def one_input(data: bytes) -> None:
    if not data:
        return
    choice, data_set = data[0], data[1:]
    try:
        ds = decode(data_set, TRANSFER_SYNTAXES[choice & 0b11])
        record = instance_record(ds, PSEUDONYMIZER, patient_id_is_resident_id=bool(choice & PATIENT_ID_IS_RESIDENT_ID))
    except DicomError:
        return
    spooled = InstanceRecord.from_dict(orjson.loads(orjson.dumps(record.to_dict())))
    try:
        report = build_report([spooled], institution=INSTITUTION, version=1, result_id=None, previous_status=None,
                              retrieval=None, received_at=RECEIVED_AT)
        PIPELINE.imaging_event(report, "dicom")
    except AdapterError:
        return


if __name__ == "__main__":
    fuzz(one_input)
