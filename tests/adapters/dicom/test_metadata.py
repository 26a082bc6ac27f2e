"""DICOM metadata extraction, study assembly and the spool (no network; a collecting fake publisher)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import orjson
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from adapters.dicom.metadata import (
    HEADER_KEYWORDS,
    STATUS_BAD_RESIDENT_ID,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_NO_RESIDENT_ID,
    STATUS_PATIENT_CONFLICT,
    STATUS_SOP_CLASS_MISMATCH,
    DicomError,
    check_complete,
    decode,
    instance_record,
)
from adapters.dicom import spool as spool_module
from adapters.dicom.spool import Spool, StudyAssembler
from adapters.report import AdapterError
from adapters.pipeline import ResultPipeline
from adapters.publish import BrokerUnavailable
from schemas import events
from schemas.resident_id import PLACEHOLDER
from schemas.topics import TOPIC_DEADLETTER

from . import dicomdata as dd
from tests.fakes import FakePublisher

from .peers import INSTITUTION

pytestmark = pytest.mark.filterwarnings("ignore:End of file reached before delimiter")


def _encoded(path: Path) -> tuple[bytes, str]:
    body = dd._body_offset(path)
    return path.read_bytes()[body:], str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def _record(path: Path, pseudonymizer, **kw):  # type: ignore[no-untyped-def]
    return instance_record(decode(*_encoded(path)), pseudonymizer, **kw)


def test_ct_metadata_is_extracted_and_the_resident_id_is_pseudonymized(tmp_path, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    study = dd.ct_study(tmp_path, slices=1)
    record = _record(study.files[0], pseudonymizer, context_sop_class="1.2.840.10008.5.1.4.1.1.2")
    assert (record.study_instance_uid, record.modality, record.accession_number) == (study.uid, "CT", "ACC-CT-1")
    assert record.body_part == "CHEST" and record.contrast  # CT_small names ContrastBolusAgent ISOVUE300/100
    assert record.study_at == "2004-01-19T07:27:30+08:00"  # no TimezoneOffsetFromUTC → China Standard Time
    assert record.patient == {"pseudonym": pseudonymizer.pseudonym(dd.RID_CT), "key_id": pseudonymizer.key_id,
                              "sex": "female", "birth_year": 1980}
    assert dd.RID_CT not in json.dumps(record.to_dict())


def test_mr_resident_id_from_other_patient_ids(tmp_path, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    record = _record(dd.mr_study(tmp_path).files[0], pseudonymizer)
    assert record.patient["pseudonym"] == pseudonymizer.pseudonym(dd.RID_MR)
    assert (record.modality, record.body_part, record.contrast, record.accession_number) == ("MR", "BRAIN", False, None)
    assert record.study_at == "2004-08-26T18:50:59-04:00"  # TimezoneOffsetFromUTC -0400 is honoured


def test_resident_id_rules(tmp_path, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    # the bundled file as shipped: PatientID 1CT1, no issuer → no resident ID
    with pytest.raises(DicomError) as missing:
        _record(dd.CT_SMALL, pseudonymizer)
    assert missing.value.status == STATUS_NO_RESIDENT_ID and "no resident ID" in missing.value.comment
    # marked by the issuer qualifiers, but the check character is wrong
    ds = pydicom.dcmread(dd.CT_SMALL, stop_before_pixels=True)
    ds.PatientID = dd.RID_CT[:-1] + ("0" if dd.RID_CT[-1] != "0" else "1")
    qualifier = Dataset()
    qualifier.IdentifierTypeCode = "NNCHN"
    ds.IssuerOfPatientIDQualifiersSequence = Sequence([qualifier])
    with pytest.raises(DicomError) as bad:
        instance_record(ds, pseudonymizer)
    assert bad.value.status == STATUS_BAD_RESIDENT_ID and "check character" in bad.value.comment
    assert ds.PatientID not in bad.value.comment
    # an unmarked PatientID counts only when the site says so
    ds.PatientID = dd.RID_CT
    del ds.IssuerOfPatientIDQualifiersSequence
    with pytest.raises(DicomError):
        instance_record(ds, pseudonymizer)
    assert instance_record(ds, pseudonymizer, patient_id_is_resident_id=True).patient["pseudonym"] == \
        pseudonymizer.pseudonym(dd.RID_CT)


def test_sop_class_and_identifier_problems_are_0xa900(tmp_path, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    path = dd.ct_study(tmp_path, slices=1, with_report=False).files[0]
    with pytest.raises(DicomError) as wrong:
        _record(path, pseudonymizer, context_sop_class="1.2.840.10008.5.1.4.1.1.4")
    assert wrong.value.status == STATUS_SOP_CLASS_MISMATCH
    ds = pydicom.dcmread(path)
    del ds.StudyInstanceUID
    with pytest.raises(DicomError) as missing:
        instance_record(ds, pseudonymizer)
    assert missing.value.status == STATUS_SOP_CLASS_MISMATCH and "StudyInstanceUID" in missing.value.comment


@pytest.mark.parametrize("cut", [1, 100, 5000, 30000])
def test_truncated_data_sets_are_detected(tmp_path, cut) -> None:  # type: ignore[no-untyped-def]
    body, ts = _encoded(dd.ct_study(tmp_path, slices=1, with_report=False).files[0])
    check_complete(body, False, True)  # the whole data set passes
    with pytest.raises(DicomError) as exc:
        decode(body[:-cut], ts)
    assert exc.value.status == STATUS_CANNOT_UNDERSTAND and "truncated" in exc.value.comment


def test_corrupt_data_set_is_cannot_understand(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = dd.ct_study(tmp_path, slices=1, with_report=False).files[0]
    body, ts = _encoded(dd.corrupt(good, tmp_path / "corrupt.dcm"))
    with pytest.raises(DicomError) as exc:
        decode(body, ts)
    assert exc.value.status == STATUS_CANNOT_UNDERSTAND


def test_sr_report_text_and_flags(tmp_path, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    study = dd.ct_study(tmp_path, slices=1)
    sr = _record(study.files[-1], pseudonymizer)
    assert sr.modality == "SR" and sr.report is not None
    assert sr.report["findings"] == "右肺上叶见一磨玻璃结节，约 6 mm。"
    assert sr.report["impression"] == "右肺上叶磨玻璃结节，建议随访。"
    assert sr.report["status"] == "final" and sr.report["reported_at"] == "2004-01-19T09:30:00+08:00"
    draft = dd.ct_study(tmp_path / "draft", slices=1, verified=False)
    assert _record(draft.files[-1], pseudonymizer).report["status"] == "preliminary"


def test_sr_codes_measurements_and_context(tmp_path, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    """CODE items a container CONTAINS and NUM items are report text in document order; concept modifiers
    and observation context (here the observer's name) are not."""
    study = dd.ct_study(tmp_path, slices=1)
    ds = pydicom.dcmread(study.files[-1])

    def item(relationship: str, kind: str, name: str, **values: object) -> Dataset:
        content = Dataset()
        content.RelationshipType, content.ValueType = relationship, kind
        content.ConceptNameCodeSequence = Sequence([dd._code("1", "99T", name)])
        for keyword, value in values.items():
            setattr(content, keyword, value)
        return content

    measured = Dataset()
    measured.NumericValue = "6"
    measured.MeasurementUnitsCodeSequence = Sequence([dd._code("mm", "UCUM", "millimeter")])
    nodule = item("CONTAINS", "CODE", "Finding", ConceptCodeSequence=Sequence([dd._code("1", "99T", "结节")]))
    nodule.ContentSequence = Sequence([
        item("HAS CONCEPT MOD", "CODE", "Laterality", ConceptCodeSequence=Sequence([dd._code("R", "99T", "右")]))])
    observer = item("HAS OBS CONTEXT", "PNAME", "Recording Observer's Name", PersonName="Li^Lei")
    observer_org = item("HAS OBS CONTEXT", "TEXT", "Recording Observer's Organization Name", TextValue="某医院")
    findings = item("CONTAINS", "CONTAINER", "Findings")
    findings.ContentSequence = Sequence([nodule, item("CONTAINS", "NUM", "Diameter", MeasuredValueSequence=Sequence(
        [measured])), item("CONTAINS", "TEXT", "Finding", TextValue="边缘光滑。\r\n")])
    ds.ContentSequence = Sequence([observer, observer_org, findings, *ds.ContentSequence[1:]])
    ds.save_as(tmp_path / "sr-codes.dcm")
    report = _record(tmp_path / "sr-codes.dcm", pseudonymizer).report
    assert report["findings"] == "Finding: 结节\nDiameter: 6 mm\n边缘光滑。"
    assert report["impression"] == "右肺上叶磨玻璃结节，建议随访。"


def test_encapsulated_pdf_contributes_a_report(pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    ds = pydicom.dcmread(dd.CT_SMALL, stop_before_pixels=True)
    ds.PatientID, ds.IssuerOfPatientID = dd.RID_CT, "NNCHN"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.Modality, ds.DocumentTitle = "DOC", "CT 报告"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    record = instance_record(ds, pseudonymizer)
    assert record.report["kind"] == "pdf" and record.report["status"] == "final"
    assert "CT 报告" in record.report["findings"]


def _spool_study(spool: Spool, files: list[Path], pseudonymizer, now: float) -> None:  # type: ignore[no-untyped-def]
    for path in files:
        assert spool.add(_record(path, pseudonymizer), now=now)


def _events(publisher: FakePublisher) -> list[dict]:  # type: ignore[type-arg]
    return [orjson.loads(r.value) for r in publisher.records]


def test_assembly_versions_duplicates_and_restart(tmp_path, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    study = dd.ct_study(tmp_path / "ct", slices=2)
    spool = Spool(tmp_path / "spool")
    publisher = FakePublisher()
    assembler = StudyAssembler(spool, ResultPipeline(book, pseudonymizer, publisher), INSTITUTION, 30)
    t0 = time.time() - 100
    _spool_study(spool, study.files, pseudonymizer, t0)
    assert not spool.add(_record(study.files[0], pseudonymizer))  # a resent instance: a duplicate
    assert assembler.assemble_once(now=t0 + 10) == 0  # not stable yet
    assert assembler.assemble_once(now=t0 + 31) == 1
    [first] = _events(publisher)
    events.validate("imaging-result.v1", first)
    assert (first["result_id"], first["version"], first["status"]) == ("ACC-CT-1", 1, "final")
    assert first["item"]["unified_code"] == "I0014" and first["study"]["instance_count"] == 3
    assert first["study"]["technique"] == "contrast" and first["report"]["impression"].startswith("右肺")
    assert first["patient"]["pseudonym"] == pseudonymizer.pseudonym(dd.RID_CT)
    assert assembler.assemble_once(now=t0 + 60) == 0  # published studies stay published
    spool.close()

    # a restart on the same spool: a late instance makes the study publish again as version 2 (amended)
    spool = Spool(tmp_path / "spool")
    assembler = StudyAssembler(spool, ResultPipeline(book, pseudonymizer, publisher), INSTITUTION, 30)
    late = dd.ct_study(tmp_path / "late", slices=1, with_report=False)
    ds = pydicom.dcmread(late.files[0])
    ds.StudyInstanceUID = study.uid
    ds.save_as(late.files[0])
    assert spool.add(_record(late.files[0], pseudonymizer), now=t0 + 70)
    assert assembler.assemble_once(now=t0 + 101) == 1
    second = _events(publisher)[-1]
    assert (second["result_id"], second["version"], second["status"]) == ("ACC-CT-1", 2, "amended")
    assert second["study"]["instance_count"] == 4
    assert spool.counts() == {"studies": 1, "pending": 0, "published": 1, "rejected": 0, "instances": 4}
    raw = (tmp_path / "spool" / "index.db").read_bytes() + (tmp_path / "spool" / "index.db-wal").read_bytes()
    assert dd.RID_CT.encode() not in raw  # the spool keeps pseudonyms only
    spool.close()


class _BrokerAway(FakePublisher):
    def publish(self, records) -> None:  # type: ignore[no-untyped-def]
        list(records)
        raise BrokerUnavailable("broker away")


def test_a_study_that_cannot_become_an_event_is_dead_lettered_once(  # type: ignore[no-untyped-def]
        tmp_path, book, pseudonymizer, monkeypatch) -> None:
    study = dd.ct_study(tmp_path / "ct", slices=1, with_report=False)
    spool = Spool(tmp_path / "spool")
    t0 = time.time() - 100
    _spool_study(spool, study.files, pseudonymizer, t0)

    def unusable(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AdapterError(f"reported before the study of {dd.RID_CT}")

    monkeypatch.setattr(spool_module, "build_report", unusable)
    # the broker away: the dead letter is not lost, the study waits for it
    away = StudyAssembler(spool, ResultPipeline(book, pseudonymizer, _BrokerAway()), INSTITUTION, 30)
    assert away.assemble_once(now=t0 + 31) == 0
    assert spool.counts()["rejected"] == 0 and spool.counts()["pending"] == 1
    publisher = FakePublisher()
    assembler = StudyAssembler(spool, ResultPipeline(book, pseudonymizer, publisher), INSTITUTION, 30)
    assert assembler.assemble_once(now=time.time() + away.max_backoff) == 0
    [record] = publisher.records
    assert (record.topic, record.key) == (TOPIC_DEADLETTER, f"dicom:{INSTITUTION}")
    letter = orjson.loads(record.value)
    events.validate("dead-letter.v1", letter)
    assert letter["origin"]["adapter"] == "dicom" and letter["origin"]["institution"] == INSTITUTION
    assert dd.RID_CT not in letter["error"] and letter["error"].endswith(f"of {PLACEHOLDER}")
    assert spool.counts()["rejected"] == 1 and assembler.stats.rejected == 1
    assert assembler.assemble_once(now=time.time() + 3600) == 0 and len(publisher.records) == 1  # never again
    spool.close()


def test_an_instance_of_another_patient_cannot_join_a_study(tmp_path, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    study = dd.ct_study(tmp_path / "a", slices=1, with_report=False)
    other = dd.ct_study(tmp_path / "b", slices=1, with_report=False, resident_id=dd.RID_MR)
    ds = pydicom.dcmread(other.files[0])
    ds.StudyInstanceUID = study.uid
    spool = Spool(tmp_path / "spool")
    assert spool.add(_record(study.files[0], pseudonymizer))
    with pytest.raises(DicomError) as exc:
        spool.add(instance_record(ds, pseudonymizer))
    assert exc.value.status == STATUS_PATIENT_CONFLICT
    assert spool.counts()["instances"] == 1
    spool.close()


def test_mixed_plain_and_contrast_series_and_mr_mapping(tmp_path, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    study = dd.ct_study(tmp_path / "ct", slices=2, with_report=False, body_part="HEAD")
    ds = pydicom.dcmread(study.files[1])
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    del ds.ContrastBolusAgent
    ds.save_as(study.files[1])
    spool = Spool(tmp_path / "spool")
    publisher = FakePublisher()
    assembler = StudyAssembler(spool, ResultPipeline(book, pseudonymizer, publisher), INSTITUTION, 0)
    _spool_study(spool, study.files + dd.mr_study(tmp_path / "mr").files, pseudonymizer, time.time() - 5)
    assert assembler.assemble_once() == 2
    by_modality = {e["study"]["modality"]: e for e in _events(publisher)}
    assert by_modality["CT"]["study"]["technique"] == "plain+contrast"
    assert by_modality["CT"]["item"]["unified_code"] == "I0003"  # CT head plain + contrast
    mr = by_modality["MR"]
    assert mr["item"]["unified_code"] == "I0070" and mr["result_id"] == mr["study"]["study_instance_uid"]
    assert mr["status"] == "preliminary" and mr["report"] is None  # images without a report
    spool.close()


# -- decode: the header only, every element checked -------------------------------------------------------

def _encode(ds: Dataset, implicit: bool = False) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, implicit
    write_dataset(out, ds)
    return out.getvalue()


class _Recording(Dataset):
    """A data set that notes which of its top-level keywords were asked for."""

    def __init__(self, ds: Dataset) -> None:
        super().__init__(ds)
        object.__setattr__(self, "asked", set())

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        if name != "asked" and name[:1].isupper():
            self.asked.add(name)
        return super().__getattr__(name)

    def __contains__(self, name) -> bool:  # type: ignore[no-untyped-def]
        if isinstance(name, str):
            self.asked.add(name)
        return super().__contains__(name)


def _pdf(path: Path) -> Path:
    ds = pydicom.dcmread(dd.CT_SMALL, stop_before_pixels=True)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientID, ds.IssuerOfPatientID = dd.RID_CT, "NNCHN"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.Modality, ds.DocumentTitle = "DOC", "CT 报告"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_instance_record_reads_only_the_header_keywords_decode_keeps(tmp_path, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    ct = dd.ct_study(tmp_path / "ct", slices=1)
    for path in [*ct.files, dd.mr_study(tmp_path / "mr").files[0], _pdf(tmp_path / "pdf.dcm")]:
        full = _Recording(pydicom.dcmread(path))
        instance_record(full, pseudonymizer)
        assert full.asked <= HEADER_KEYWORDS, f"{path.name}: read, not kept: {full.asked - HEADER_KEYWORDS}"
        header = decode(*_encoded(path))
        assert {e.keyword for e in header} <= HEADER_KEYWORDS and "PixelData" not in header
        # the record from the header alone is the record from the whole data set
        assert instance_record(header, pseudonymizer) == instance_record(pydicom.dcmread(path), pseudonymizer)


@pytest.mark.parametrize("implicit", [False, True])
def test_undefined_lengths_are_walked_and_checked(tmp_path, pseudonymizer, implicit) -> None:  # type: ignore[no-untyped-def]
    sr = pydicom.dcmread(dd.ct_study(tmp_path, slices=1).files[-1])
    sr["ContentSequence"].is_undefined_length = True
    for item in sr.ContentSequence:
        item.is_undefined_length_sequence_item = True
    body = _encode(sr, implicit)
    ts = "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1"
    # sequence and item delimiters: the walk hands this element to pydicom (before: 0xC000 for a valid set)
    assert b"\xfe\xff\xdd\xe0" in body and b"\xfe\xff\x0d\xe0" in body
    record = instance_record(decode(body, ts), pseudonymizer)
    assert record.report and record.report["impression"] == "右肺上叶磨玻璃结节，建议随访。"
    for cut in (1, 8, 40):  # into the sequence delimiter, the last item's delimiter, the last item
        with pytest.raises(DicomError) as exc:
            decode(body[:-cut], ts)
        assert exc.value.status == STATUS_CANNOT_UNDERSTAND  # "truncated" or, from pydicom, "undecodable"
    with pytest.raises(DicomError) as stray:
        decode(body + b"\x00" * 3, ts)
    assert "stray" in stray.value.comment


def test_encapsulated_pixel_data_is_checked_to_its_delimiter(tmp_path, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(dd.ct_study(tmp_path, slices=1, with_report=False).files[0])
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 998 + b"\xff\xd9"])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    body = _encode(ds)
    ts = "1.2.840.10008.1.2.4.50"  # JPEG Baseline: explicit VR little endian, encapsulated pixel data
    assert instance_record(decode(body, ts), pseudonymizer).modality == "CT"
    with pytest.raises(DicomError) as exc:
        decode(body[:-12], ts)  # the sequence delimiter and the end of the fragment are missing
    assert exc.value.status == STATUS_CANNOT_UNDERSTAND


def test_the_spool_preallocates_its_write_ahead_log(tmp_path, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    from adapters.dicom.spool import WAL_PREALLOCATE

    study = dd.ct_study(tmp_path / "ct", slices=2, with_report=False)
    spool = Spool(tmp_path / "spool")
    wal = tmp_path / "spool" / "index.db-wal"
    assert wal.stat().st_size >= WAL_PREALLOCATE  # commits overwrite it in place from the first instance
    assert spool.add(_record(study.files[0], pseudonymizer))
    assert wal.stat().st_size >= WAL_PREALLOCATE and spool.get_state("wal-preallocation") is None
    spool.close()
    spool = Spool(tmp_path / "spool")  # reopened (the WAL was checkpointed away at close): grown again
    assert wal.stat().st_size >= WAL_PREALLOCATE
    assert spool.counts()["instances"] == 1 and spool.add(_record(study.files[1], pseudonymizer))
    spool.close()
