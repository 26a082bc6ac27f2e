"""Read-only code-book endpoints and operators' own code directories."""
from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from codes import default_codes_dir
from exchange import runtime
from exchange.api import Context, create_app
from exchange.config import Settings
from adapters.publish import Publisher

from tests.fixtures.principals import Principals

AT = "2026-11-21T10:00:00+08:00"


@pytest.fixture
def api(book, pseudonymizer, tmp_path) -> TestClient:  # type: ignore[no-untyped-def]
    from exchange.store import connect, migrate

    database = connect(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(database)
    context = Context(book=book, database=database, pseudonymizer=pseudonymizer,
                      publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="g")
    return TestClient(create_app(context), headers=Principals(database).operator())  # reads reference data


def test_catalogue_list_marks_versions_in_force(api, book) -> None:  # type: ignore[no-untyped-def]
    body = api.get("/api/v1/catalogues", params={"at": AT}).json()
    assert len(body["catalogues"]) == len(book.catalogues)
    jjj = [c for c in body["catalogues"] if c["id"] == "jjj-lab"]
    assert len(jjj) == 2 and sum(c["in_force"] for c in jjj) == 1
    assert all(c["tier"] == "region" for c in api.get("/api/v1/catalogues", params={"tier": "region"}).json()["catalogues"])


def test_one_catalogue_with_items(api, book) -> None:  # type: ignore[no-untyped-def]
    body = api.get("/api/v1/catalogues/jjj-lab", params={"at": AT}).json()
    in_force = next(c for c in book.catalogues_in_force(datetime.fromisoformat(AT)) if c.id == "jjj-lab")
    assert body["version"] == in_force.version and len(body["items"]) == len(in_force.items) == body["item_count"]
    assert len(body["versions"]) == 2
    old = api.get("/api/v1/catalogues/jjj-lab", params={"version": body["versions"][0]}).json()
    assert old["version"] == body["versions"][0]
    assert api.get("/api/v1/catalogues/nope").status_code == 404
    assert api.get("/api/v1/catalogues/jjj-lab", params={"version": "0"}).json()["field"] == "version"


def test_item_and_institution(api) -> None:  # type: ignore[no-untyped-def]
    glucose = api.get("/api/v1/items/L0032", params={"at": AT}).json()
    assert glucose["loinc"] == "14749-6" and glucose["unit"] == "mmol/L"
    assert {"bj-province", "national-core"} & {c["id"] for c in glucose["catalogues"]}
    assert api.get("/api/v1/items/ZZZ").status_code == 404
    inst = api.get("/api/v1/institutions/he-sjz-001").json()
    assert inst["province"] == "13" and "jjj" in inst["regions"] and inst["qc"]
    response = api.get("/api/v1/institutions/nowhere")
    assert response.status_code == 404 and response.json()["error"].startswith("institution_id")


def test_operators_own_code_directory_is_used(tmp_path: Path) -> None:
    root = tmp_path / "mycodes"
    shutil.copytree(default_codes_dir(), root)
    path = root / "institutions.yaml"
    path.write_text(path.read_text("utf-8").replace("北京市示例朝阳医院", "运营方自有医院"), "utf-8")
    book = runtime.codebook(Settings(codes_dir=root))
    assert book.institution("bj-chaoyang-001").name_zh == "运营方自有医院"
    assert runtime.codebook(Settings.from_env({"HRX_CODES_DIR": str(root)})).version == book.version



def test_the_unmapped_queue_by_reason(api, book, pseudonymizer) -> None:  # type: ignore[no-untyped-def]
    from adapters.report import Code, LabObservation, LabReport, Patient, Value
    from adapters.pipeline import ResultPipeline
    from exchange.store import Delivery, ingest
    from schemas.resident_id import make_resident_id

    report = LabReport(institution="bj-chaoyang-001", result_id="R-Q-1", version=2, status="final",
                       patient=Patient(make_resident_id("11010519800312002")), codes=[Code("NEWGLU")],
                       observations=[LabObservation([Code("NEWGLU")], Value("quantity", 5.0, unit="mmol/L")),
                                     LabObservation([Code("K")], Value("quantity", 4.0, unit="U/L"))],
                       reported_at=datetime.fromisoformat(AT))
    with api.app.state.context.database.begin() as conn:
        ingest(conn, [Delivery(ResultPipeline(book, pseudonymizer).lab_event(report, "fhir"))])
    body = api.get("/api/v1/unmapped-codes").json()
    assert [(g["reason"], g["en"], [(c["local_code"], c["results"]) for c in g["codes"]]) for g in body["groups"]] == [
        ("unknown_code", "unknown code", [("NEWGLU", 1)]), ("unit_not_convertible", "unit not convertible", [("K", 1)])]
    assert api.get("/api/v1/unmapped-codes", params={"institution": "zj-hz-001"}).json()["groups"] == []
