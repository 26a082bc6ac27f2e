"""Building valid events for tests without going through an adapter."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.pseudonymize import Pseudonymizer
from schemas.events import timestamp
from tests.conftest import TEST_KEY

#: The key id of the tests' key: what an engine configured with TEST_KEY stores.
TEST_KEY_ID = Pseudonymizer(TEST_KEY).key_id


def lab_event(*, issuer: str = "test-hospital", result_id: str = "R1", version: int = 1, status: str = "final",
              patient: str = "a" * 64, code: str | None = "L0001", value: float = 4.2,
              reported_at: datetime | None = None, observations: list[dict[str, Any]] | None = None,
              key_id: str = TEST_KEY_ID) -> dict[str, Any]:
    reported_at = reported_at or datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    return {
        "schema": "hr.lab-result.v1",
        "event_id": str(uuid.uuid4()),
        "issuer": issuer,
        "result_id": result_id,
        "version": version,
        "status": status,
        "patient": {"pseudonym": patient, "key_id": key_id, "sex": "female", "birth_year": 1980},
        "item": {"unified_code": code, "local_code": "GLU", "local_system": None, "local_name": "葡萄糖"},
        "observations": observations or [{
            "seq": 0, "item": {"unified_code": code, "local_code": "GLU"}, "value_type": "quantity",
            "value": value, "unit": "mmol/L", "reference_range": {"low": 3.9, "high": 6.1, "text": None},
            "interpretation": "N"}],
        "specimen": {"type": "SER", "id": "S1"},
        "collected_at": timestamp(reported_at - timedelta(hours=2)),
        "reported_at": timestamp(reported_at),
        "source": {"adapter": "fhir", "message_id": "B1", "received_at": timestamp(reported_at)},
    }
