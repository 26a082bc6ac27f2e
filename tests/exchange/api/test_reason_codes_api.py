"""Reason codes come from the code book the API was started with, whether the operator's directory is given as
``HRX_CODES_DIR`` or as ``hrx up --codes``: the shipped codes when the directory has none, else its own."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from adapters.report import Code, LabObservation, LabReport, Patient, Value

from adapters.pipeline import ResultPipeline
from adapters.publish import Publisher
from codes import CodeBook, default_codes_dir
from exchange import runtime
from exchange.api import Context, create_app
from exchange.cli.stack import up as up_command
from exchange.config import Settings
from exchange.store import Delivery, connect, ingest, migrate
from schemas.resident_id import make_resident_id
from tests.fixtures.principals import Principals

# The app's outbox relay reaches for a broker socket while it runs.
pytestmark = pytest.mark.integration

WORLD = Path(__file__).parents[2] / "data" / "codes-world"
SHIPPED = ("items.csv", "prices.csv", "regions.yaml", "divisions.csv", "aliases.csv", "imaging_aliases.csv")
RESIDENT_ID = make_resident_id("11010519800312002")
# Their own list: fewer codes, other words, and a note demanded for a patient's request.
OWN_REASONS = """code,reason_zh,reason_en,counts_as_non_recognition,note_required
01,病情变化（本院）,Condition changed (our wording),yes,no
06,患者要求复查（须说明）,The patient asked (explain),yes,yes
08,其他（须说明）,Other (explain),yes,yes
99,动态监测,Monitoring,no,no
"""


def _world(root: Path, own_reasons: str | None) -> Path:
    """The shipped items and divisions with the test world's institutions and catalogues (tests/data/codes-world),
    which has no reason_codes.csv; ``own_reasons`` adds one."""
    root.mkdir()
    for name in SHIPPED:
        shutil.copy(default_codes_dir() / name, root / name)
    shutil.copytree(WORLD, root, dirs_exist_ok=True)
    if own_reasons is not None:
        (root / "reason_codes.csv").write_text(own_reasons, "utf-8")
    return root


def _from_env(root: Path, monkeypatch: pytest.MonkeyPatch) -> CodeBook:
    monkeypatch.setenv("HRX_CODES_DIR", str(root))
    return runtime.codebook(Settings.from_env())


def _from_up_option(root: Path, monkeypatch: pytest.MonkeyPatch) -> CodeBook:
    """What ``hrx up --codes DIR`` loads: the command's settings, given to the code book as ``up`` does."""
    monkeypatch.delenv("HRX_CODES_DIR", raising=False)
    started: list[Settings] = []
    monkeypatch.setattr("exchange.up.up", lambda settings, **_: started.append(settings) or 0)
    result = CliRunner().invoke(up_command, ["--codes", str(root)])
    assert result.exit_code == 0, result.output
    return runtime.codebook(started[0])


@pytest.fixture(params=[_from_env, _from_up_option], ids=["HRX_CODES_DIR", "up --codes"])
def started_with(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                 tmp_path: Path, pseudonymizer) -> Callable[[str | None], TestClient]:  # type: ignore[no-untyped-def]
    """Start the API on a world directory (with ``own_reasons`` as its reason_codes.csv, if given), holding one
    recognizable glucose result from bj-a1 for the requester bj-a2."""

    def start(own_reasons: str | None) -> TestClient:
        book = request.param(_world(tmp_path / "codes", own_reasons), monkeypatch)
        database = connect(f"sqlite:///{tmp_path / 'api.db'}")
        migrate(database)
        event = ResultPipeline(book, pseudonymizer).lab_event(LabReport(
            institution="bj-a1", result_id="R1", version=1, status="final", patient=Patient(RESIDENT_ID),
            codes=[Code("14749-6", "http://loinc.org")], reported_at=datetime.now(UTC) - timedelta(hours=2),
            observations=[LabObservation([Code("14749-6", "http://loinc.org")],
                                         Value("quantity", 5.4, unit="mmol/L"))]), "fhir")
        with database.begin() as conn:
            ingest(conn, [Delivery(event)])
        context = Context(book=book, database=database, pseudonymizer=pseudonymizer,
                          publisher=Publisher("127.0.0.1:9"), bootstrap="127.0.0.1:9", engine_group="g")
        principals = Principals(database)
        principals.encounter(event["patient"]["pseudonym"], "bj-a2")
        client = TestClient(create_app(context), headers=principals.his("bj-a2", "dr-li"))
        client.operator = principals.operator()  # type: ignore[attr-defined]
        return client

    return start


def _reject(api: TestClient, reason: str, note: str | None = None, encounter: str = "E1"):  # type: ignore[no-untyped-def]
    return api.post("/api/v1/decisions", json={
        "result_id": "bj-a1/R1", "requesting_institution": "bj-a2", "clinician_id": "dr-li",
        "encounter_id": encounter, "trigger": "encounter", "decision": "reject", "reason_code": reason, "note": note})


def test_a_directory_without_reason_codes_uses_the_shipped_ones(started_with) -> None:  # type: ignore[no-untyped-def]
    api = started_with(None)
    listed = api.get("/api/v1/reason-codes")
    assert listed.status_code == 200, listed.text
    assert [r["code"] for r in listed.json()] == ["01", "02", "03", "04", "05", "06", "07", "08", "98", "99"]
    assert _reject(api, "08").json()["field"] == "note"
    assert _reject(api, "07").status_code == 201
    stats = api.get("/api/v1/stats", params={"scope": "bj-a2"}, headers=api.operator)
    assert stats.status_code == 200, stats.text
    assert stats.json()["rejected_by_reason"]["07"]["reason_zh"] == "出具机构质控不合格或结果质量存疑"


def test_a_directory_with_its_own_reason_codes_uses_them(started_with) -> None:  # type: ignore[no-untyped-def]
    api = started_with(OWN_REASONS)
    listed = api.get("/api/v1/reason-codes").json()
    assert [(r["code"], r["zh"], r["note_required"]) for r in listed] == [
        ("01", "病情变化（本院）", False), ("06", "患者要求复查（须说明）", True), ("08", "其他（须说明）", True),
        ("99", "动态监测", False)]
    unknown = _reject(api, "07")
    assert unknown.status_code == 422 and unknown.json()["field"] == "reason_code"
    assert "01, 06, 08, 99" in unknown.json()["error"]
    assert _reject(api, "06").json()["field"] == "note"
    assert _reject(api, "06", note="患者坚持").status_code == 201
    assert _reject(api, "99", encounter="E2").status_code == 201
    stats = api.get("/api/v1/stats", params={"scope": "bj-a2"}, headers=api.operator).json()
    assert stats["rejected_by_reason"]["06"]["reason_zh"] == "患者要求复查（须说明）"
    assert stats["excluded_from_denominator"] == 1  # 99: continuous monitoring does not count against recognition
