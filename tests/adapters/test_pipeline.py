"""The ingest pipeline: each step on its own (check, map, pseudonymize, envelope, validate, publish), then
composed by ResultPipeline, with a publisher that records instead of a broker."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from adapters.envelope import imaging_result_event, lab_result_event
from adapters.pipeline import ResultPipeline, check_institution, check_report, map_imaging_report, map_lab_report, publish_events, pseudonymize_patient, validate_event
from adapters.pseudonymize import Pseudonymizer
from adapters.report import (
    AdapterError,
    Code,
    ImagingReport,
    LabObservation,
    LabReport,
    MappedImagingReport,
    MappedLabReport,
    Patient,
    PseudonymizedPatient,
    Study,
    Value,
)
from codes import CodeBook, load_codebook
from codes.book import SHIPPED_DIR
from codes.calendar import BEIJING
from schemas import events
from schemas.resident_id import make_resident_id
from schemas.topics import TOPIC_IMAGING, TOPIC_LAB
from tests.fakes import FakePublisher

INSTITUTION = "bj-xicheng-001"
RESIDENT_ID = make_resident_id("11010519800312002")
WRONG_CHECK_CHARACTER = "110105194912310021"  # GB 11643: its check character is X
REPORTED = datetime(2026, 11, 20, 9, 30, tzinfo=BEIJING)
RECEIVED = datetime(2026, 11, 20, 1, 31, tzinfo=UTC)
SPOOLED = PseudonymizedPatient("ab" * 32, "0123abcd", "male", 1961, "PatientID")
LOINC_SPELLINGS = ("http://loinc.org", "LN", "LOINC", "urn:oid:2.16.840.1.113883.6.1",
                   "HTTP://LOINC.ORG", "ln", "Loinc", "URN:OID:2.16.840.1.113883.6.1")


def _lab(**changes: object) -> LabReport:
    report = LabReport(
        institution=INSTITUTION, result_id="BJXC-1", version=1, status="final",
        patient=Patient(RESIDENT_ID, "female", 1980, "PID-3"), codes=[Code("PANEL-UNKNOWN", None, "生化")],
        observations=[LabObservation([Code("BJXCGLU", None, "葡萄糖")],
                                     Value("quantity", 90.0, unit="mg/dL", ref_low=70.0, ref_high=110.0,
                                           interpretation="N"), "OBX[1]")],
        reported_at=REPORTED, collected_at=REPORTED - timedelta(hours=2), specimen_type="SER", specimen_id="S1",
        message_id="MSG-1", location="ORU^R01")
    return replace(report, **changes)


def _imaging(**changes: object) -> ImagingReport:
    report = ImagingReport(
        institution=INSTITUTION, result_id="ACC-1", version=1, status="final", patient=SPOOLED,
        study=Study("1.2.3.4", "CT", "ACC-1", "HEAD", "plain", "颅脑平扫", 2, 120, REPORTED - timedelta(hours=1)),
        reported_at=REPORTED, findings="未见异常", retrieval={"ae_title": "PACS", "host": "10.0.0.1", "port": 104},
        message_id="1.2.3.4", location="study 1.2.3.4")
    return replace(report, **changes)


@pytest.fixture(scope="module")
def own_system_book(tmp_path_factory: pytest.TempPathFactory) -> CodeBook:
    """The shipped code book plus a zj-hz-001 row declared under the hospital's own system ``99LIS``."""
    root = tmp_path_factory.mktemp("codes") / "data"
    shutil.copytree(SHIPPED_DIR, root)
    table = root / "mappings" / "zj-hz-001" / "v1.csv"
    table.write_text(table.read_text("utf-8").rstrip("\n") + "\n99LIS,XGLU,,葡萄糖(仪器),L0032,mg/dL,0.05551,,\n",
                     "utf-8")
    return load_codebook(root)


def _without_event_id(event: dict) -> dict:  # type: ignore[type-arg]
    return {k: v for k, v in event.items() if k != "event_id"}


# -- the steps, one at a time ----------------------------------------------------------------------------


def test_check_refuses_an_unknown_issuer_an_unknown_status_and_times_without_offset(book: CodeBook) -> None:
    with pytest.raises(AdapterError) as unknown:
        check_institution(book, "nowhere-001", "MSH-4")
    assert (unknown.value.code, unknown.value.location) == ("not-found", "MSH-4")
    check_report(book, _lab(), REPORTED)  # a good report passes
    with pytest.raises(AdapterError, match="status 'done' is not one of") as bad_status:
        check_report(book, _lab(status="done"))
    assert bad_status.value.location == "ORU^R01"
    with pytest.raises(AdapterError, match="time zone offset"):
        check_report(book, _lab(), REPORTED, datetime(2026, 11, 20, 8))


def test_map_gives_each_observation_its_item_and_converted_value(book: CodeBook) -> None:
    mapped = map_lab_report(book, _lab())
    [glucose] = mapped.observations
    assert (glucose["item"]["unified_code"], glucose["unit"], glucose["value"]) == ("L0032", "mmol/L",
                                                                                    round(90 * 0.05551, 6))
    assert glucose["original"]["value"] == 90.0 and glucose["interpretation"] == "N"
    # the report's own code is unmapped; its single mapped observation names its item
    assert (mapped.item["unified_code"], mapped.item["local_code"]) == ("L0032", "PANEL-UNKNOWN")
    assert mapped.report == _lab()


def test_map_refuses_a_report_without_observations_or_codes(book: CodeBook) -> None:
    with pytest.raises(AdapterError, match="at least one observation") as empty:
        map_lab_report(book, _lab(observations=[]))
    assert empty.value.location == "ORU^R01"
    with pytest.raises(AdapterError, match="no code given"):
        map_lab_report(book, _lab(codes=[]))
    with pytest.raises(AdapterError, match="no code given"):
        map_lab_report(book, _lab(observations=[LabObservation([], Value("text", text="x"))]))


def test_map_imaging_tries_procedure_codes_then_the_study_shape(book: CodeBook) -> None:
    by_shape = map_imaging_report(book, _imaging()).item
    assert (by_shape["unified_code"], by_shape["local_code"]) == (book.imaging_item("CT", "HEAD", "plain").code,
                                                                  "CT/HEAD/plain")
    # zj-hz-001's table maps its procedure code CT-HEAD-P; it wins over a study shape saying otherwise
    mr_study = replace(_imaging().study, modality="MR", body_part="LSPINE")
    by_code = map_imaging_report(book, _imaging(institution="zj-hz-001", study=mr_study,
                                                codes=[Code("CT-HEAD-P", "99RIS")])).item
    assert (by_code["unified_code"], by_code["local_code"]) == ("I0001", "CT-HEAD-P")
    unmapped = map_imaging_report(book, _imaging(study=replace(_imaging().study, body_part="ELBOW",
                                                               technique="contrast"))).item
    assert (unmapped["unified_code"], unmapped["local_code"]) == (None, "CT/ELBOW/contrast")


def test_pseudonymize_replaces_the_resident_id_with_the_keyed_pseudonym(pseudonymizer: Pseudonymizer) -> None:
    patient = pseudonymize_patient(pseudonymizer, Patient(RESIDENT_ID, "female", 1980, "PID-3"))
    assert patient == PseudonymizedPatient(pseudonymizer.pseudonym(RESIDENT_ID), pseudonymizer.key_id, "female",
                                           1980, "PID-3")
    with pytest.raises(AdapterError) as invalid:
        pseudonymize_patient(pseudonymizer, Patient(WRONG_CHECK_CHARACTER, location="PID-3"))
    assert invalid.value.location == "PID-3"


def test_an_already_pseudonymized_patient_passes_unchanged(pseudonymizer: Pseudonymizer) -> None:
    assert pseudonymize_patient(pseudonymizer, SPOOLED) is SPOOLED
    assert SPOOLED.key_id != pseudonymizer.key_id  # the key id it was made with, not the pipeline's


def test_envelope_builds_the_lab_event_from_a_mapped_report_and_a_pseudonym() -> None:
    item = {"unified_code": "L0045", "local_code": "K", "local_system": None, "local_name": "钾",
            "mapping_version": "v1", "mapping_issue": None}
    observation = {"seq": 0, "item": item, "value_type": "quantity", "value": 4.1, "comparator": None,
                   "value_text": None, "unit": "mmol/L", "original": None, "reference_range": None,
                   "interpretation": None}
    event = lab_result_event(MappedLabReport(_lab(), item, [observation]), SPOOLED, "hl7v2", RECEIVED)
    assert _without_event_id(event) == {
        "schema": "hr.lab-result.v1", "issuer": INSTITUTION, "result_id": "BJXC-1", "version": 1,
        "status": "final",
        "patient": {"pseudonym": SPOOLED.pseudonym, "key_id": "0123abcd", "sex": "male", "birth_year": 1961},
        "item": item, "observations": [observation], "specimen": {"type": "SER", "id": "S1"},
        "collected_at": "2026-11-20T07:30:00+08:00", "reported_at": "2026-11-20T09:30:00+08:00",
        "source": {"adapter": "hl7v2", "message_id": "MSG-1", "received_at": "2026-11-20T01:31:00+00:00"}}
    events.validate("lab-result.v1", event)
    assert RESIDENT_ID not in json.dumps(event)  # the envelope never sees the report's raw patient


def test_envelope_builds_the_imaging_event_from_a_mapped_report() -> None:
    item = {"unified_code": "I0001", "local_code": "CT/HEAD/plain", "local_system": "dicom", "local_name": "颅脑平扫",
            "mapping_version": None, "mapping_issue": None}
    event = imaging_result_event(MappedImagingReport(_imaging(), item), SPOOLED, "dicom", RECEIVED)
    events.validate("imaging-result.v1", event)
    assert event["schema"] == "hr.imaging-result.v1" and event["item"] == item
    assert event["study"] == {"study_instance_uid": "1.2.3.4", "accession_number": "ACC-1", "modality": "CT",
                              "body_part": "HEAD", "technique": "plain", "description": "颅脑平扫",
                              "series_count": 2, "instance_count": 120, "study_at": "2026-11-20T08:30:00+08:00"}
    assert event["report"] == {"findings": "未见异常", "impression": None}
    assert event["retrieval"] == {"ae_title": "PACS", "host": "10.0.0.1", "port": 104}
    assert imaging_result_event(MappedImagingReport(_imaging(findings=None), item), SPOOLED, "dicom",
                                RECEIVED)["report"] is None


def test_validate_reports_every_violation_at_the_reports_location() -> None:
    event = lab_result_event(map_lab_report(load_codebook(SHIPPED_DIR), _lab()),
                             replace(SPOOLED, pseudonym="not-a-pseudonym"), "fhir", RECEIVED)
    event["version"] = 0
    with pytest.raises(AdapterError) as invalid:
        validate_event("lab-result.v1", event, "Bundle.entry[0]")
    assert invalid.value.location == "Bundle.entry[0]"
    assert "$.patient.pseudonym" in invalid.value.message and "$.version" in invalid.value.message
    event["version"], event["patient"]["pseudonym"] = 1, SPOOLED.pseudonym
    assert validate_event("lab-result.v1", event, "Bundle.entry[0]") is event


def test_publish_sends_each_event_to_its_topic_keyed_by_pseudonym(book: CodeBook, pseudonymizer: Pseudonymizer) -> None:
    pipeline = ResultPipeline(book, pseudonymizer)
    lab, imaging = pipeline.lab_event(_lab(), "hl7v2"), pipeline.imaging_event(_imaging(), "dicom")
    publisher = FakePublisher()
    publish_events(publisher, [lab, imaging])  # type: ignore[arg-type]
    assert [(r.topic, r.key) for r in publisher.records] == [(TOPIC_LAB, lab["patient"]["pseudonym"]),
                                                             (TOPIC_IMAGING, SPOOLED.pseudonym)]
    assert [orjson.loads(r.value) for r in publisher.records] == [lab, imaging]


# -- composed --------------------------------------------------------------------------------------------


def test_lab_event_is_the_steps_composed(book: CodeBook, pseudonymizer: Pseudonymizer) -> None:
    event = ResultPipeline(book, pseudonymizer, received_at=RECEIVED).lab_event(_lab(), "hl7v2")
    by_steps = lab_result_event(map_lab_report(book, _lab()), pseudonymize_patient(pseudonymizer, _lab().patient),
                                "hl7v2", RECEIVED)
    assert _without_event_id(event) == _without_event_id(by_steps)
    assert event["patient"]["pseudonym"] == pseudonymizer.pseudonym(RESIDENT_ID)
    assert RESIDENT_ID not in json.dumps(event)


def test_the_pipeline_stops_at_the_first_failing_step(book: CodeBook, pseudonymizer: Pseudonymizer) -> None:
    pipeline = ResultPipeline(book, pseudonymizer)
    with pytest.raises(AdapterError) as unknown:
        pipeline.lab_event(_lab(institution="nowhere-001"), "fhir")
    assert unknown.value.code == "not-found"
    with pytest.raises(AdapterError) as invalid:  # passes check and map, fails validation
        pipeline.lab_event(_lab(version=0), "fhir")
    assert "$.version" in invalid.value.message and invalid.value.location == "ORU^R01"


def test_imaging_event_keeps_a_pseudonym_made_earlier(book: CodeBook, pseudonymizer: Pseudonymizer) -> None:
    event = ResultPipeline(book, pseudonymizer, received_at=RECEIVED).imaging_event(_imaging(), "dicom")
    assert event["patient"] == {"pseudonym": SPOOLED.pseudonym, "key_id": SPOOLED.key_id, "sex": "male",
                                "birth_year": 1961}
    assert event["item"]["unified_code"] == book.imaging_item("CT", "HEAD", "plain").code
    # the same report from a source that sends the resident ID is pseudonymized by the pipeline's key
    raw = ResultPipeline(book, pseudonymizer).imaging_event(_imaging(patient=Patient(RESIDENT_ID)), "dicom")
    assert raw["patient"]["key_id"] == pseudonymizer.key_id


def test_publish_needs_a_publisher_and_sends_all(book: CodeBook, pseudonymizer: Pseudonymizer) -> None:
    pipeline = ResultPipeline(book, pseudonymizer)
    event = pipeline.lab_event(_lab(), "csv")
    with pytest.raises(RuntimeError, match="no publisher"):
        pipeline.publish([event])
    publisher = FakePublisher()
    ResultPipeline(book, pseudonymizer, publisher).publish([event, event])  # type: ignore[arg-type]
    assert publisher.events(TOPIC_LAB) == [event, event]
    with pytest.raises(AdapterError) as unknown:
        pipeline.check_institution("nowhere-001")
    assert unknown.value.code == "not-found"


# -- code systems as sent reach the mapping --------------------------------------------------------------


def test_a_code_under_the_hospitals_own_system_maps_end_to_end(own_system_book: CodeBook,
                                                                pseudonymizer: Pseudonymizer) -> None:
    publisher = FakePublisher()
    pipeline = ResultPipeline(own_system_book, pseudonymizer, publisher)  # type: ignore[arg-type]
    report = _lab(institution="zj-hz-001", codes=[Code("XGLU", "99LIS")],
                  observations=[LabObservation([Code("XGLU", "99LIS", "葡萄糖(仪器)")],
                                               Value("quantity", 90.0, unit="mg/dL"))])
    pipeline.publish([pipeline.lab_event(report, "hl7v2")])
    [event] = publisher.events(TOPIC_LAB)
    [glucose] = event["observations"]
    assert (glucose["item"]["unified_code"], glucose["item"]["local_system"]) == ("L0032", "99LIS")
    assert (glucose["value"], glucose["unit"]) == (round(90 * 0.05551, 6), "mmol/L")
    assert event["item"]["unified_code"] == "L0032"
    # without the system the row (declared under 99LIS only) does not apply
    plain = pipeline.lab_event(replace(report, codes=[Code("XGLU")], observations=[
        LabObservation([Code("XGLU")], Value("quantity", 90.0, unit="mg/dL"))]), "hl7v2")
    assert plain["observations"][0]["item"]["unified_code"] is None


@pytest.mark.parametrize("system", LOINC_SPELLINGS)
def test_a_loinc_code_maps_end_to_end_under_any_loinc_system_name(book: CodeBook, pseudonymizer: Pseudonymizer,
                                                                   system: str) -> None:
    publisher = FakePublisher()
    pipeline = ResultPipeline(book, pseudonymizer, publisher)  # type: ignore[arg-type]
    report = _lab(institution="zj-hz-001", codes=[Code("24323-8", system)], observations=[
        # the hospital's own LOINC-keyed row (mg/dL → mmol/L) ...
        LabObservation([Code("2345-7", system)], Value("quantity", 90.0, unit="mg/dL")),
        # ... and the items' LOINC column
        LabObservation([Code("2823-3", system)], Value("quantity", 4.1, unit="mmol/L"))])
    pipeline.publish([pipeline.lab_event(report, "fhir")])
    [event] = publisher.events(TOPIC_LAB)
    glucose, potassium = event["observations"]
    assert (glucose["item"]["unified_code"], glucose["value"]) == ("L0032", round(90 * 0.05551, 6))
    assert glucose["item"]["mapping_version"] == "v1" and glucose["original"]["unit"] == "mg/dL"
    assert (potassium["item"]["unified_code"], potassium["value"]) == (book.item_by_loinc("2823-3").code, 4.1)
    assert potassium["item"]["local_system"] == system


def _pydicom_study_report(name: str, institution: str, pseudonymizer: Pseudonymizer) -> ImagingReport:
    """One of pydicom's bundled test files, as shipped except for the resident ID the DICOM adapter requires,
    through the adapter's own metadata extraction (read by path: get_testdata_file may go to the network)."""
    import pydicom

    from adapters.dicom.metadata import build_report, instance_record

    ds = pydicom.dcmread(Path(pydicom.__file__).parent / "data" / "test_files" / name)
    ds.PatientID, ds.IssuerOfPatientID = RESIDENT_ID, "NNCHN"
    record = instance_record(ds, pseudonymizer)
    return build_report([record], institution=institution, version=1, result_id=None, previous_status=None,
                        retrieval=None, received_at=RECEIVED)


@pytest.mark.parametrize(("name", "study", "item"), [
    ("CT_small.dcm", ("CT", None, "contrast", "e+1"), "I0014"),   # matched by its StudyDescription
    ("MR_small.dcm", ("MR", None, "plain", None), "I0070"),       # matched by its shape
])
def test_pydicoms_bundled_studies_map_through_the_imaging_table(book: CodeBook, pseudonymizer: Pseudonymizer,
                                                                 name: str, study: tuple, item: str) -> None:
    report = _pydicom_study_report(name, "zj-hz-001", pseudonymizer)
    shape = report.study
    assert (shape.modality, shape.body_part, shape.technique, shape.description) == study
    # The DICOM report already carries its pseudonym: the pipeline's pseudonymize step passes it through.
    event = ResultPipeline(book, pseudonymizer, received_at=RECEIVED).imaging_event(report, "dicom")
    assert (event["item"]["unified_code"], event["item"]["mapping_version"]) == (item, "v1")
    assert event["item"]["mapping_issue_code"] is None
    # a hospital without such rows: neither study says its body part, so nothing maps, and the reason says so
    elsewhere = map_imaging_report(book, _pydicom_study_report(name, INSTITUTION, pseudonymizer)).item
    assert (elsewhere["unified_code"], elsewhere["mapping_issue_code"]) == (None, "unknown_code")
    assert elsewhere["mapping_version"] is None  # bj-xicheng-001 has no imaging table


def test_a_requested_procedure_reaches_the_event_and_the_imaging_table(book: CodeBook,
                                                                       pseudonymizer: Pseudonymizer) -> None:
    study = replace(_imaging().study, body_part=None, technique="contrast", requested_procedure="胸部CT增强")
    event = ResultPipeline(book, pseudonymizer).imaging_event(_imaging(institution="zj-hz-001", study=study), "dicom")
    assert event["item"]["unified_code"] == "I0014"
    assert event["study"]["requested_procedure"] == "胸部CT增强"
    assert "requested_procedure" not in ResultPipeline(book, pseudonymizer).imaging_event(_imaging(), "dicom")["study"]


def test_a_lab_event_carries_the_reason_of_each_unmapped_code(book: CodeBook, pseudonymizer: Pseudonymizer) -> None:
    report = _lab(codes=[Code("PANEL-UNKNOWN")], observations=[
        LabObservation([Code("BJXCGLU")], Value("quantity", 90.0, unit="mg/dl")),
        LabObservation([Code("2823-3", "http://loinc.org")], Value("quantity", 4.1, unit="mmol/l")),
        LabObservation([Code("2823-3", "http://loinc.org")], Value("quantity", 4.1, unit="U/L")),
        LabObservation([Code("NO-SUCH")], Value("quantity", 1.0, unit="mmol/L"))])
    event = ResultPipeline(book, pseudonymizer).lab_event(report, "hl7v2")
    reasons = [(o["item"]["unified_code"], o["item"]["mapping_issue_code"]) for o in event["observations"]]
    assert reasons == [("L0032", None), ("L0045", None), (None, "unit_not_convertible"), (None, "unknown_code")]
    assert event["observations"][0]["value"] == round(90 * 0.05551, 6)  # mg/dl is the row's mg/dL
    assert event["item"]["mapping_issue_code"] == "ambiguous"  # its observations map to L0032 and L0045
    assert "L0032、L0045" in event["item"]["mapping_issue_zh"]
