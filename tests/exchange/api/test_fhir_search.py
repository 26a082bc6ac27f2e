"""The FHIR read/search server (/fhir): parameters and their refusals (unit), and every route over both stores —
every answer validated with the fhir.resources R4B models, access as the JSON API's, every read audited."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.structuredefinition import StructureDefinition

from adapters.pipeline import ResultPipeline
from adapters.report import Code, ImagingReport, LabObservation, LabReport, Patient, Study, Value
from codes.calendar import BEIJING
from exchange import audit
from exchange.api import Context, create_app
from exchange.fhir import params
from exchange.fhir.params import SearchError
from exchange.fhir.resources import RECOGNITION_URL, structure_definition
from exchange.fhir.search import SEARCHES
from exchange.store import Delivery, ingest
from schemas.resident_id import make_resident_id
from tests.fakes import FakePublisher
from tests.fixtures.principals import Principals

RESIDENT_ID = make_resident_id("11010519800312002")
REQUESTER, ISSUER, STRANGER = "bj-chaoyang-001", "bj-xicheng-001", "bj-haidian-001"
NOW = datetime.now(UTC)
FHIR = "application/fhir+json"


# -- unit: parameter values --------------------------------------------------------------------------------------

def test_a_date_covers_the_range_of_its_precision() -> None:
    day = params.date_range("ge2026-11-20", "date")
    assert day.prefix == "ge" and day.low == datetime(2026, 11, 20, tzinfo=BEIJING)
    assert day.high - day.low == timedelta(days=1)
    month = params.date_range("2026-12", "date")
    assert (month.low, month.high) == (datetime(2026, 12, 1, tzinfo=BEIJING), datetime(2027, 1, 1, tzinfo=BEIJING))
    moment = params.date_range("lt2026-11-20T10:00:00Z", "date")
    assert moment.low == datetime(2026, 11, 20, 10, tzinfo=UTC) and moment.high - moment.low == timedelta(seconds=1)
    assert params.date_range("2026-11-20T10:00", "date").low.utcoffset() == timedelta(hours=8)  # no zone: Beijing


@pytest.mark.parametrize("raw", ["ap2026", "2026-13", "2026-11-31", "yesterday", "ge", "2026-1-2"])
def test_a_bad_date_is_refused_naming_the_parameter(raw: str) -> None:
    with pytest.raises(SearchError) as refused:
        params.date_range(raw, "date")
    assert refused.value.expression == "date" and refused.value.status == 400


def test_a_quantity_equals_within_its_precision() -> None:
    q = params.quantity("5.4|http://unitsofmeasure.org|mmol/L", "value-quantity")
    assert (q.prefix, q.code) == ("eq", "mmol/L") and q.low == pytest.approx(5.35) and q.high == pytest.approx(5.45)
    assert params.quantity("gt100", "value-quantity").value == 100
    with pytest.raises(SearchError):
        params.quantity("gtabc", "value-quantity")


def test_tokens_and_references() -> None:
    assert params.token("http://loinc.org|1742-6", "code") == params.Token("http://loinc.org", "1742-6")
    assert params.token("|x", "code") == params.Token("", "x") and params.token("x", "code").system is None
    assert params.split_values(r"a,b\,c") == ["a", "b,c"]
    assert params.reference("Patient/abc", "patient", "Patient") == "abc"
    assert params.reference("http://h/fhir/Organization/bj-1", "performer", "Organization") == "bj-1"
    with pytest.raises(SearchError):
        params.reference("Organization/x", "patient", "Patient")


def test_the_structure_definition_validates_and_names_every_part_the_server_writes() -> None:
    definition = structure_definition()
    StructureDefinition.model_validate(definition)
    assert definition["url"] == RECOGNITION_URL
    slices = {e["sliceName"] for e in definition["differential"]["element"]
              if e.get("sliceName") and e["path"] == "Extension.extension"}
    assert slices == {"item", "requester", "evaluatedAt", "status", "tier", "catalogue", "catalogueVersion",
                      "validUntil", "reason"}


# -- the server over both stores ---------------------------------------------------------------------------------

@dataclass
class World:
    client: TestClient
    who: Principals
    pseudonym: str
    database: Any

    def get(self, url: str, headers: dict[str, str] | None = None, **query: Any) -> Any:
        return self.client.get(url, params=query or None,
                               headers=self.who.his(REQUESTER) if headers is None else headers)

    def bundle(self, url: str, **query: Any) -> dict[str, Any]:
        response = self.get(url, **query)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(FHIR)
        Bundle.model_validate(response.json())
        return response.json()


def _lab(result_id: str, values: list[tuple[str, float, str]], *, status: str = "final", version: int = 1,
         hours_ago: int = 24) -> LabReport:
    return LabReport(institution=ISSUER, result_id=result_id, version=version, status=status,
                     patient=Patient(RESIDENT_ID), codes=[Code(values[0][0])],
                     observations=[LabObservation([Code(code)], Value("quantity", v, unit=unit, ref_low=1.0,
                                                                       ref_high=200.0, interpretation="N"))
                                   for code, v, unit in values],
                     reported_at=NOW - timedelta(hours=hours_ago), collected_at=NOW - timedelta(hours=hours_ago + 2))


def _ct() -> ImagingReport:
    return ImagingReport(
        institution="bj-chaoyang-002", result_id="ACC-CT-1", version=1, status="final", patient=Patient(RESIDENT_ID),
        reported_at=NOW - timedelta(days=5),
        study=Study("1.2.826.0.1.3680043.2.1125.1", "CT", accession_number="ACC-CT-1", body_part="HEAD",
                    technique="plain", description="头颅CT平扫", instance_count=120, study_at=NOW - timedelta(days=5)),
        findings="脑实质未见异常密度影。", impression="颅脑CT平扫未见异常。",
        retrieval={"ae_title": "BJCYPACS", "host": "pacs.example", "port": 104, "wado_rs": None})


def _store(database: Any, pipeline: ResultPipeline, *reports: Any) -> list[dict[str, Any]]:
    events = [pipeline.imaging_event(r, "dicom") if isinstance(r, ImagingReport) else pipeline.lab_event(r, "fhir")
              for r in reports]
    with database.begin() as conn:
        ingest(conn, [Delivery(e) for e in events])
    return events


@pytest.fixture
def world(book, database, pseudonymizer, principals) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """One patient with three lab reports from ISSUER (R2 corrected to version 2) and a CT study, in an open
    encounter at REQUESTER."""
    pipeline = ResultPipeline(book, pseudonymizer)
    events = _store(database, pipeline,
                    _lab("R1", [("BJXCGLU", 99.0, "mg/dL"), ("BJXCK", 4.1, "mmol/L")], hours_ago=24),
                    _lab("R2", [("BJXCALT", 30.0, "U/L")], hours_ago=48),
                    _lab("R3", [("BJXCAST", 25.0, "U/L")], status="preliminary", hours_ago=72), _ct())
    _store(database, pipeline, _lab("R2", [("BJXCALT", 35.0, "U/L")], status="corrected", version=2, hours_ago=48))
    pseudonym = events[0]["patient"]["pseudonym"]
    principals.encounter(pseudonym, REQUESTER)
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer, publisher=FakePublisher(),
                      bootstrap="127.0.0.1:9", engine_group="g")  # type: ignore[arg-type]
    with TestClient(create_app(context)) as client:
        yield World(client, principals, pseudonym, database)


def _resources(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", ()) if e["search"]["mode"] == mode]


def _recognition(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return [{part["url"]: part for part in ext["extension"]} for ext in resource.get("extension", ())
            if ext["url"] == RECOGNITION_URL]


def test_metadata_states_exactly_the_parameters_the_searches_take(world: World) -> None:
    response = world.client.get("/fhir/metadata")  # public, as FHIR clients expect
    assert response.status_code == 200
    statement = response.json()
    CapabilityStatement.model_validate(statement)
    stated = {r["type"]: {p["name"] for p in r.get("searchParam", ())} for r in statement["rest"][0]["resource"]}
    for name, search in SEARCHES.items():
        assert stated[name] - {"_count", "_sort"} == {q.name for q in search.params}
    assert next(r for r in statement["rest"][0]["resource"] if r["type"] == "DiagnosticReport")["searchInclude"] == [
        "DiagnosticReport:result", "DiagnosticReport:performer"]


def test_a_resident_id_resolves_to_the_pseudonym_and_is_never_echoed(world: World) -> None:
    bundle = world.bundle("/fhir/Patient", identifier=f"urn:oid:2.16.156.10011.1.3|{RESIDENT_ID}")
    [patient] = _resources(bundle)
    assert patient["id"] == world.pseudonym and bundle["total"] == 1
    read = world.get(f"/fhir/Patient/{world.pseudonym}")  # what every result's subject refers to
    assert read.status_code == 200 and read.json()["id"] == world.pseudonym
    assert world.get(f"/fhir/Patient/{world.pseudonym}", world.who.his(STRANGER, "dr-x")).status_code == 403
    assert world.get("/fhir/Patient/not-a-pseudonym").status_code == 404
    assert RESIDENT_ID not in str(bundle)
    bad = world.get("/fhir/Patient", identifier="urn:oid:2.16.156.10011.1.3|110105198003120021")
    assert bad.status_code == 400 and "110105198003120021" not in bad.text
    OperationOutcome.model_validate(bad.json())


def test_reports_with_their_values_issuer_versions_and_recognition(world: World) -> None:
    bundle = world.bundle("/fhir/DiagnosticReport", patient=f"Patient/{world.pseudonym}",
                          _include="DiagnosticReport:result")
    reports = _resources(bundle)
    assert bundle["total"] == 4 and len(reports) == 4
    assert [r["issued"][-6:] for r in reports] == ["+08:00"] * 4
    issued = [r["issued"] for r in reports]
    assert issued == sorted(issued, reverse=True)  # newest first by default
    by_number = {r["identifier"][0]["value"]: r for r in reports}
    r2 = by_number["R2"]
    assert r2["meta"]["versionId"] == "2" and r2["status"] == "corrected"
    assert r2["performer"][0]["reference"] == f"Organization/{ISSUER}"
    [recognition] = _recognition(r2)
    assert recognition["status"]["valueCode"] == "recognizable", recognition
    assert recognition["validUntil"]["valueDateTime"].endswith("+08:00") and recognition["catalogue"]["valueString"]
    assert recognition["requester"]["valueReference"]["reference"] == f"Organization/{REQUESTER}"
    assert {"zh", "en"} == {p["url"] for p in recognition["reason"]["extension"]}
    preliminary = _recognition(by_number["R3"])[0]
    assert preliminary["status"]["valueCode"] == "not_final"
    included = {o["id"]: o for o in _resources(bundle, "include")}
    assert set(included) == {ref["reference"].split("/")[1] for r in reports for ref in r.get("result", ())}
    alt = included[r2["result"][0]["reference"].split("/")[1]]
    assert alt["valueQuantity"]["value"] == 35.0 and alt["meta"]["versionId"] == "2"
    ct = by_number["ACC-CT-1"]
    assert ct["category"][0]["coding"][0]["code"] == "RAD" and ct["conclusion"] == "颅脑CT平扫未见异常。"
    assert ct["imagingStudy"][0]["reference"] == f"ImagingStudy/{ct['id']}"


SEARCH_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"code": "urn:hrx:item|L0001"}, {"R2"}),
    ({"code": "http://loinc.org|1742-6"}, {"R2"}),
    ({"code": f"urn:hrx:local-code:{ISSUER}|BJXCAST,urn:hrx:item|L0001"}, {"R2", "R3"}),
    ({"status": "preliminary"}, {"R3"}),
    ({"status": "final,corrected"}, {"R1", "R2", "ACC-CT-1"}),
    ({"category": "RAD"}, {"ACC-CT-1"}),
    ({"category": "http://terminology.hl7.org/CodeSystem/v2-0074|LAB"}, {"R1", "R2", "R3"}),
    ({"category": "urn:hrx:item-category|biochemistry"}, {"R1", "R2", "R3"}),
    ({"performer": "Organization/bj-chaoyang-002"}, {"ACC-CT-1"}),
    ({"issued": f"ge{(NOW - timedelta(hours=60)).astimezone(BEIJING):%Y-%m-%dT%H:%M:%S}"}, {"R1", "R2"}),
    ({"date": [f"lt{(NOW - timedelta(hours=30)).astimezone(BEIJING):%Y-%m-%dT%H:%M}",
               f"gt{(NOW - timedelta(days=4)).astimezone(BEIJING):%Y-%m-%d}"]}, {"R2", "R3"}),
    ({"issued": f"ne{(NOW - timedelta(hours=24)).astimezone(BEIJING):%Y}"}, set()),
]


def test_report_search_parameters(world: World) -> None:
    for query, expected in SEARCH_CASES:  # one store for every case: the world is costly to build
        bundle = world.bundle("/fhir/DiagnosticReport", patient=world.pseudonym, **query)
        assert {r["identifier"][0]["value"] for r in _resources(bundle)} == expected, query
        assert bundle["total"] == len(expected), query


def test_paging_walks_every_report_once_with_stable_next_links(  # type: ignore[no-untyped-def]
        world: World, book, pseudonymizer) -> None:
    bundle = world.bundle("/fhir/DiagnosticReport", patient=world.pseudonym, _count="1", _sort="issued")
    seen = [r["identifier"][0]["value"] for r in _resources(bundle)]
    links = []
    # A result arriving mid-walk (newer than every other) neither shifts nor repeats a page.
    _store(world.database, ResultPipeline(book, pseudonymizer), _lab("R9", [("BJXCALT", 31.0, "U/L")], hours_ago=1))
    while (following := {l["relation"]: l["url"] for l in bundle["link"]}.get("next")):
        links.append(following)
        response = world.client.get(following, headers=world.who.his(REQUESTER))
        assert response.status_code == 200, response.text
        bundle = response.json()
        Bundle.model_validate(bundle)
        seen += [r["identifier"][0]["value"] for r in _resources(bundle)]
    assert seen == ["ACC-CT-1", "R3", "R2", "R1", "R9"]  # oldest first, each once, then the newcomer
    assert world.client.get(links[1], headers=world.who.his(REQUESTER)).json()["entry"][0]["resource"][
        "identifier"][0]["value"] == "R2"  # a next link gives the same page again


def test_observation_search_lastn_and_value_quantity(world: World) -> None:
    pseudonym = world.pseudonym
    glucose_or_k = world.bundle("/fhir/Observation", patient=pseudonym, code="urn:hrx:item|L0032,BJXCK")
    assert len(_resources(glucose_or_k)) == 2
    for resource in _resources(glucose_or_k):
        Observation.model_validate(resource)
        assert resource["performer"][0]["reference"] == f"Organization/{ISSUER}"
    above = world.bundle("/fhir/Observation", patient=pseudonym,
                         **{"value-quantity": "gt30|http://unitsofmeasure.org|U/L"})
    assert {o["code"]["coding"][-1]["code"] for o in _resources(above)} == {"BJXCALT"}  # 35, not version 1's 30
    assert _resources(world.bundle("/fhir/Observation", patient=pseudonym, **{"value-quantity": "35"}))
    assert not _resources(world.bundle("/fhir/Observation", patient=pseudonym, **{"value-quantity": "le4"}))
    assert len(_resources(world.bundle("/fhir/Observation", patient=pseudonym, category="laboratory"))) == 4
    lastn = world.bundle("/fhir/Observation/$lastn", patient=pseudonym, max="1")
    assert len(_resources(lastn)) == 4 and lastn["total"] == 4  # one per code: glucose, K, ALT, AST
    assert len(_resources(world.bundle("/fhir/Observation/$lastn", patient=pseudonym, code="urn:hrx:item|L0001",
                                       max="5"))) == 1  # the corrected ALT once: versions are not values
    assert world.get("/fhir/Observation/$lastn", patient=pseudonym, max="0").status_code == 400
    day = (NOW - timedelta(hours=50)).astimezone(BEIJING)  # R2 was collected 50 hours ago
    on_that_day = world.bundle("/fhir/Observation", patient=pseudonym, date=f"{day:%Y-%m-%dT%H}:{day:%M}")
    assert [o["code"]["coding"][-1]["code"] for o in _resources(on_that_day)] == ["BJXCALT"]
    later = world.bundle("/fhir/Observation", patient=pseudonym, date=f"sa{day:%Y-%m-%dT%H:%M:%S}")
    assert {o["code"]["coding"][-1]["code"] for o in _resources(later)} == {"BJXCGLU", "BJXCK"}  # R1's


def test_imaging_study_with_its_retrieval_endpoint(world: World) -> None:
    bundle = world.bundle("/fhir/ImagingStudy", patient=world.pseudonym, modality="CT",
                          started=f"ge{(NOW - timedelta(days=6)).astimezone(BEIJING):%Y-%m-%d}")
    [study] = _resources(bundle)
    assert study["contained"][0]["resourceType"] == "Endpoint" and study["endpoint"] == [{"reference": "#endpoint"}]
    assert study["contained"][0]["address"] == "dicom://BJCYPACS@pacs.example:104"
    assert study["identifier"][0]["assigner"]["reference"] == "Organization/bj-chaoyang-002"
    assert _recognition(study)
    assert not _resources(world.bundle("/fhir/ImagingStudy", patient=world.pseudonym, modality="MR"))
    assert not _resources(world.bundle("/fhir/ImagingStudy", patient=world.pseudonym,
                                       started=f"lt{(NOW - timedelta(days=6)).astimezone(BEIJING):%Y-%m-%d}"))


def test_read_vread_and_unknown_ids(world: World) -> None:
    bundle = world.bundle("/fhir/DiagnosticReport", patient=world.pseudonym, code="urn:hrx:item|L0001")
    [report] = _resources(bundle)
    read = world.get(f"/fhir/DiagnosticReport/{report['id']}")
    assert read.status_code == 200 and read.headers["etag"] == 'W/"2"'
    DiagnosticReport.model_validate(read.json())
    history = world.get(f"/fhir/DiagnosticReport/{report['id']}/_history")
    assert history.status_code == 200 and history.json()["type"] == "history"
    Bundle.model_validate(history.json())
    assert [e["resource"]["meta"]["versionId"] for e in history.json()["entry"]] == ["2", "1"]
    first = world.get(f"/fhir/DiagnosticReport/{report['id']}/_history/1").json()
    assert first["meta"]["versionId"] == "1" and first["status"] == "final"
    value = world.get(f"/fhir/{first['result'][0]['reference']}/_history/1").json()
    assert value["valueQuantity"]["value"] == 30.0
    assert world.get(f"/fhir/{report['result'][0]['reference']}").json()["valueQuantity"]["value"] == 35.0
    [ct] = _resources(world.bundle("/fhir/DiagnosticReport", patient=world.pseudonym, category="RAD"))
    study = world.get(f"/fhir/{ct['imagingStudy'][0]['reference']}")
    assert study.status_code == 200 and study.json()["resourceType"] == "ImagingStudy"
    for missing in (f"/fhir/DiagnosticReport/{report['id']}/_history/7", "/fhir/DiagnosticReport/999999",
                    "/fhir/DiagnosticReport/abc", "/fhir/Observation/1-x", f"/fhir/ImagingStudy/{report['id']}"):
        response = world.get(missing)
        assert response.status_code == 404, missing
        assert OperationOutcome.model_validate(response.json()).issue[0].code == "not-found"
    organization = world.get(f"/fhir/Organization/{ISSUER}")
    assert organization.status_code == 200 and organization.json()["identifier"][0]["value"] == ISSUER


def test_unknown_parameters_are_reported_or_refused_under_strict_handling(world: World) -> None:
    bundle = world.bundle("/fhir/DiagnosticReport", patient=world.pseudonym, **{"foo": "1", "code": "L0001"})
    [outcome] = _resources(bundle, "outcome")
    assert outcome["issue"][0]["expression"] == ["foo"] and len(_resources(bundle)) == 1
    assert "foo" not in bundle["link"][0]["url"] and "code=L0001" in bundle["link"][0]["url"]
    strict = world.client.get("/fhir/DiagnosticReport", params={"patient": world.pseudonym, "foo": "1"},
                              headers={**world.who.his(REQUESTER), "Prefer": "handling=strict"})
    assert strict.status_code == 400 and strict.json()["issue"][0]["code"] == "not-supported"
    for query in ({"date": "2026-13"}, {"_count": "-1"}, {"_sort": "status"}, {"_include": "Observation:subject"},
                  {"code:text": "x"}, {"_page": "not-a-page"}, {}):
        response = world.get("/fhir/DiagnosticReport", **({"patient": world.pseudonym} | query if query else {}))
        assert response.status_code == 400, (query, response.text)
        OperationOutcome.model_validate(response.json())


def test_no_treatment_relationship_is_403_and_every_read_is_audited(world: World) -> None:
    for url in ("/fhir/DiagnosticReport", "/fhir/Observation", "/fhir/ImagingStudy", "/fhir/Observation/$lastn"):
        refused = world.get(url, world.who.his(STRANGER, "dr-x"), patient=world.pseudonym)
        assert refused.status_code == 403 and refused.json()["issue"][0]["code"] == "forbidden"
    assert world.get("/fhir/DiagnosticReport", {}, patient=world.pseudonym).status_code == 401
    assert world.get("/fhir/DiagnosticReport", world.who.source(ISSUER), patient=world.pseudonym).status_code == 403
    clinician = world.who.clinician(REQUESTER)
    [report] = _resources(world.bundle("/fhir/DiagnosticReport", patient=world.pseudonym, status="preliminary"))
    assert world.get(f"/fhir/DiagnosticReport/{report['id']}", clinician).status_code == 200
    assert world.get(f"/fhir/DiagnosticReport/{report['id']}", world.who.his(STRANGER, "dr-x")).status_code == 403
    with world.database.connect() as conn:
        trail = audit.trail(conn, world.pseudonym)
    actions = [(r["action"], r["actor"], r["on_behalf_of"]) for r in trail]
    assert ("fhir.search.DiagnosticReport", f"his-{REQUESTER}", "dr-wang") in actions
    assert ("fhir.read", "dr-wang", None) in actions
    assert not any(r["institution"] == STRANGER for r in trail)  # refused reads read nothing


def test_a_sharing_block_withholds_results_from_search_and_read(world: World) -> None:
    [ct] = _resources(world.bundle("/fhir/DiagnosticReport", patient=world.pseudonym, category="RAD"))
    block = world.client.post("/api/v1/me/blocks", headers=world.who.patient(world.pseudonym),
                              json={"issuer": "bj-chaoyang-002"})
    assert block.status_code == 201, block.text
    bundle = world.bundle("/fhir/DiagnosticReport", patient=world.pseudonym)
    assert bundle["total"] == 3 and "ACC-CT-1" not in {r["identifier"][0]["value"] for r in _resources(bundle)}
    assert world.get(f"/fhir/DiagnosticReport/{ct['id']}").status_code == 404


def test_the_structure_definition_is_served(world: World) -> None:
    response = world.client.get("/fhir/StructureDefinition/hrx-recognition")
    assert response.status_code == 200 and response.json()["url"] == RECOGNITION_URL
    assert world.client.get("/fhir/StructureDefinition/nope").status_code == 404


def _check_parameters(**extra: Any) -> dict[str, Any]:
    parameter = [{"name": "patient", "valueIdentifier": {"system": "urn:oid:2.16.156.10011.1.3", "value": RESIDENT_ID}},
                 {"name": "requester", "valueReference": {"reference": f"Organization/{REQUESTER}"}},
                 {"name": "at", "valueDateTime": NOW.astimezone(BEIJING).isoformat()}]
    parameter += [{"name": name, **value} for name, values in extra.items() for value in values]
    return {"resourceType": "Parameters", "parameter": parameter}


def test_recognition_check_operation_mirrors_the_json_check(world: World) -> None:
    headers = world.who.his(REQUESTER)
    encounter = world.client.post("/fhir/$recognition-check", json=_check_parameters(), headers=headers)
    assert encounter.status_code == 200, encounter.text
    Parameters.model_validate(encounter.json())
    same = world.client.post("/api/v1/recognition/check", headers=headers, json={
        "patient": {"resident_id": RESIDENT_ID}, "requesting_institution": REQUESTER,
        "at": NOW.astimezone(BEIJING).isoformat()}).json()
    parts = {p["name"]: p for p in encounter.json()["parameter"]}
    assert parts["trigger"]["valueCode"] == "encounter" and parts["complete"]["valueBoolean"] is True
    results = [p["part"] for p in encounter.json()["parameter"] if p["name"] == "result"]
    assert len(results) == len(same["results"])
    statuses = sorted(next(q["valueCode"] for q in next(r for r in parts_ if r["name"] == "recognition")["part"]
                           if q["name"] == "status") for parts_ in results)
    assert statuses == sorted(e["recognition"]["status"] for e in same["results"])
    report = next(r for r in results[0] if r["name"] == "report")["valueReference"]["reference"]
    assert world.get(f"/fhir/{report}").status_code == 200  # the report named is readable by its FHIR id

    order = world.client.post("/fhir/$recognition-check", headers=headers, json=_check_parameters(
        item=[{"valueCoding": {"system": "urn:hrx:item", "code": "L0001"}},
              {"valueCoding": {"system": "urn:hrx:item", "code": "L0002"}}]))
    assert order.status_code == 200, order.text
    ordered = [{q["name"]: q for q in p["part"]} for p in order.json()["parameter"] if p["name"] == "order"]
    assert [o["item"]["valueCoding"]["code"] for o in ordered] == ["L0001", "L0002"]
    assert ordered[0]["recognizable"]["valueBoolean"] is True and "best" in ordered[0]
    assert ordered[1]["recognizable"]["valueBoolean"] is False

    for body, status in ((_check_parameters(item=[{"valueCoding": {"system": "urn:hrx:item", "code": "ZZZ"}}]), 422),
                         ({"resourceType": "Parameters", "parameter": [{"name": "nonsense", "valueString": "x"}]}, 400),
                         ({"resourceType": "Patient"}, 400)):
        refused = world.client.post("/fhir/$recognition-check", headers=headers, json=body)
        assert refused.status_code == status, refused.text
        OperationOutcome.model_validate(refused.json())
    stranger = world.client.post("/fhir/$recognition-check", json=_check_parameters(),
                                 headers=world.who.his(STRANGER, "dr-x"))
    assert stranger.status_code == 403


def test_run_time_validation_can_be_turned_on_and_changes_nothing_in_the_answer(world: World) -> None:
    from exchange.config import Settings

    settings = Settings.from_env({"HRX_FHIR_VALIDATE": "1"}, stack=False)
    assert settings.fhir_validate is True and settings.to_env()["HRX_FHIR_VALIDATE"] == "1"
    assert Settings.from_env({}, stack=False).fhir_validate is False
    query = {"patient": world.pseudonym, "_include": "DiagnosticReport:result"}
    unvalidated = world.bundle("/fhir/DiagnosticReport", **query)
    world.client.app.state.context.fhir_validate = True  # type: ignore[attr-defined]
    validated = world.bundle("/fhir/DiagnosticReport", **query)
    def timeless(bundle: dict[str, Any]) -> str:  # each Bundle has its own id and time, each evaluation its own
        import json
        import re

        text = json.dumps({**bundle, "id": None, "meta": None})
        return re.sub(r'"url": "evaluatedAt", "valueDateTime": "[^"]+"', "", text)

    assert timeless(validated) == timeless(unvalidated)
