"""Real answers of the check satisfy the model that describes them (CheckAnswer), for every kind of entry
(both stores). The model refuses undeclared keys, so an answer that grows, loses or renames a field fails here."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

import exchange.api.recognition as recognition
from adapters.report import Code, ImagingReport, LabObservation, LabReport, Patient, Study, Value
from adapters.pipeline import ResultPipeline
from adapters.publish import Publisher
from exchange.api import Context, create_app
from exchange.api.check_answer import CheckAnswer
from exchange.recognize import Recognizer
from exchange.store import Delivery, ingest
from schemas.resident_id import make_resident_id

RESIDENT_ID = make_resident_id("11010519800312002")
REQUESTER = "bj-chaoyang-001"
ISSUER = "bj-xicheng-001"
AT = datetime.fromisoformat("2026-11-21T10:00:00+08:00")


def _lab(result_id: str, codes: list[tuple[str, float, str]], status: str = "final") -> LabReport:
    return LabReport(
        institution=ISSUER, result_id=result_id, version=1, status=status, patient=Patient(RESIDENT_ID),
        codes=[Code(codes[0][0])], reported_at=AT - timedelta(hours=30), collected_at=AT - timedelta(hours=32),
        observations=[LabObservation([Code(code)], Value("quantity", value, unit=unit, ref_low=1.0, ref_high=9.0))
                      for code, value, unit in codes])


@pytest.fixture
def api(book, database, pseudonymizer, principals) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """A patient with lab results of every verdict from one hospital and a CT study from another."""
    pipeline = ResultPipeline(book, pseudonymizer)
    events = [pipeline.lab_event(report, "fhir") for report in (
        _lab("GLU-CTNI", [("BJXCGLU", 99.0, "mg/dL"), ("BJXCCTNI", 0.01, "ng/mL")]),  # recognizable, expired
        _lab("CBC", [("BJXCBLD-CBC", 6.1, "10*9/L"), ("BJXCWBC", 6.1, "10*9/L")]),  # the panel: not in catalogue
        _lab("ALT", [("BJXCALT", 30.0, "U/L")], status="preliminary"),  # not final
        _lab("NEW", [("BJXC-NOT-MAPPED", 1.0, "U/L")]))]  # unmapped
    events.append(pipeline.imaging_event(ImagingReport(
        institution="bj-chaoyang-002", result_id="CT-1", version=1, status="final", patient=Patient(RESIDENT_ID),
        reported_at=AT - timedelta(days=2),
        study=Study("1.2.826.0.1.3680043.2.1125.7", "CT", accession_number="CT-1", body_part="HEAD",
                    technique="plain", instance_count=120, study_at=AT - timedelta(days=2)),
        impression="颅脑CT平扫未见异常。", retrieval={"ae_title": "BJCYPACS", "host": "pacs.example", "port": 104,
                                             "wado_rs": None}), "dicom"))
    with database.begin() as conn:
        ingest(conn, [Delivery(e) for e in events])
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer,
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="g")
    principals.encounter(events[0]["patient"]["pseudonym"], REQUESTER)
    yield TestClient(create_app(context), headers=principals.his(REQUESTER))


def _check(api: TestClient, **extra: object) -> bytes:
    response = api.post("/api/v1/recognition/check", json={
        "patient": {"resident_id": RESIDENT_ID}, "requesting_institution": REQUESTER, "at": AT.isoformat(), **extra})
    assert response.status_code == 200, response.text
    return response.content


def _entries(answer: dict) -> list[dict]:  # type: ignore[type-arg]
    if answer["trigger"] == "encounter":
        return answer["results"]  # type: ignore[no-any-return]
    return [e for o in answer["results"] for e in ([o["best"]] if o["best"] else []) + o["others"]]


def test_the_encounter_answer_is_what_the_model_declares(api) -> None:  # type: ignore[no-untyped-def]
    body = _check(api)
    CheckAnswer.model_validate_json(body, strict=True)
    entries = _entries(orjson.loads(body))
    assert {e["recognition"]["status"] for e in entries} == {
        "recognizable", "expired", "not_in_catalogue", "not_final", "unmapped"}
    assert {e["result"]["kind"] for e in entries} == {"lab", "imaging"}


def test_the_order_answer_is_what_the_model_declares(api) -> None:  # type: ignore[no-untyped-def]
    body = _check(api, items=["L0032", "L0070", "L0263", "L0001", "L0195"])
    CheckAnswer.model_validate_json(body, strict=True)
    ordered = orjson.loads(body)["results"]
    assert [o["recognizable"] for o in ordered] == [True, False, False, False, False]
    assert ordered[1]["others"] and ordered[4] == {"item": "L0195", "recognizable": False, "best": None, "others": []}


def test_an_incomplete_answer_is_what_the_model_declares(api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    class Failing(Recognizer):
        def answer(self, issuer, item, *args):  # type: ignore[no-untyped-def]
            if item == "L0070":
                raise RuntimeError("no verdict")
            return super().answer(issuer, item, *args)

    monkeypatch.setattr(recognition, "Recognizer", Failing)
    answer = CheckAnswer.model_validate_json(_check(api), strict=True).root
    assert answer.complete is False and "no verdict" in (answer.incomplete_reason or "")


def _neither_lab_nor_imaging(entry: dict) -> None:  # type: ignore[type-arg]
    entry.pop("values" if "values" in entry else "study")


@pytest.mark.parametrize("change", [
    lambda entry: entry.update(extra=1),  # a field the model does not declare
    lambda entry: entry["recognition"].pop("via"),  # a declared field left out
    lambda entry: entry["recognition"].update(status="maybe"),  # outside the vocabulary
    lambda entry: entry["result"].update(reported_at="2026-11-21T10:00:00"),  # a moment without its offset
    lambda entry: entry["item"].update(code=32),  # the wrong type
    _neither_lab_nor_imaging,
])
def test_the_model_refuses_an_answer_that_drifted(api, change) -> None:  # type: ignore[no-untyped-def]
    answer = orjson.loads(_check(api))
    for index in range(len(answer["results"])):
        drifted = copy.deepcopy(answer)
        change(drifted["results"][index])
        with pytest.raises(ValidationError):
            CheckAnswer.model_validate_json(orjson.dumps(drifted), strict=True)
