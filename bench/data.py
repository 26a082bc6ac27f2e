"""Synthetic, deterministic events for the benchmarks, built from the real code book (codes/data)."""
from __future__ import annotations

import hashlib
import random
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from adapters.pseudonymize import Pseudonymizer
from exchange.store.models import Observation, Result

#: Every generated moment is relative to this, so a stored data set stays valid across runs.
EPOCH = datetime(2026, 6, 1, tzinfo=UTC)
#: The moment recognition checks are made (a day after the newest generated report).
CHECK_AT = EPOCH + timedelta(days=1)
#: The pseudonym key of every benchmark and fault-suite process; events are made under its key id, which the
#: engine checks (an event under another key id is dead-lettered).
PSEUDONYM_KEY = "hrx-bench-key-0123456789"
KEY_ID = Pseudonymizer(PSEUDONYM_KEY.encode()).key_id


def pseudonym(n: int | str) -> str:
    return hashlib.sha256(f"hrx-bench-patient-{n}".encode()).hexdigest()


@cache
def lab_codes() -> dict[str, list[tuple[str, str, str | None]]]:
    """institution → [(local_code, unified_code, unit)] of its simple analytes (no panels), from codes/."""
    from codes import load_codebook

    book = load_codebook()
    out: dict[str, list[tuple[str, str, str | None]]] = {}
    for inst in book.institutions:
        table = book.mapping_table(inst)
        rows = []
        for row in (table.rows.values() if table else ()):
            item = book.items.get(row.unified_code or "")
            if row.system == "local" and item and item.kind == "lab_analyte" and not item.components:
                rows.append((row.local_code, item.code, item.unit))
        if rows:
            out[inst] = rows
    return out


def institutions_near(requester: str = "bj-chaoyang-002") -> list[str]:
    """Issuers in the requester's province and region (so that checks walk every recognition rule)."""
    prefix = requester.split("-")[0]
    near = [i for i in lab_codes() if i.split("-")[0] in (prefix, "tj", "he")]
    return near or list(lab_codes())


def lab_event(i: int, rng: random.Random, *, patient: str | None = None, issuer: str | None = None,
              reported_at: datetime | None = None, version: int = 1, status: str = "final",
              result_id: str | None = None) -> dict[str, Any]:
    """A realistic hr.lab-result.v1 event (1–3 observations) from a code-book institution."""
    table = lab_codes()
    issuer = issuer or rng.choice(sorted(table))
    codes = table[issuer]
    picked = rng.sample(codes, k=min(len(codes), rng.choice((1, 1, 2, 3))))
    reported_at = reported_at or EPOCH - timedelta(minutes=rng.randrange(0, 365 * 24 * 60))
    observations = []
    for seq, (local, unified, unit) in enumerate(picked):
        value = round(rng.uniform(0.5, 120.0), 2)
        observations.append({
            "seq": seq, "item": {"unified_code": unified, "local_code": local, "local_system": None,
                                 "local_name": None, "mapping_version": "v1", "mapping_issue": None},
            "value_type": "quantity", "value": value, "comparator": None, "value_text": None, "unit": unit,
            "original": None, "reference_range": {"low": round(value * 0.6, 2), "high": round(value * 1.4, 2),
                                                  "text": None},
            "interpretation": "N"})
    local, unified, _ = picked[0]
    return {
        "schema": "hr.lab-result.v1",
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "issuer": issuer,
        "result_id": result_id or f"LAB{i:09d}",
        "version": version,
        "status": status,
        "patient": {"pseudonym": patient or pseudonym(i), "key_id": KEY_ID,
                    "sex": rng.choice(("male", "female")), "birth_year": rng.randrange(1930, 2020)},
        "item": {"unified_code": unified, "local_code": local, "local_system": None, "local_name": "检验项目",
                 "mapping_version": "v1", "mapping_issue": None},
        "observations": observations,
        "specimen": {"type": "SER", "id": f"S{i}"},
        "collected_at": (reported_at - timedelta(hours=2)).isoformat(),
        "reported_at": reported_at.isoformat(),
        "source": {"adapter": "fhir", "message_id": f"B{i}", "received_at": reported_at.isoformat()},
    }


def imaging_event(i: int, rng: random.Random, *, patient: str | None = None) -> dict[str, Any]:
    reported_at = EPOCH - timedelta(minutes=rng.randrange(0, 365 * 24 * 60))
    return {
        "schema": "hr.imaging-result.v1",
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "issuer": "bj-chaoyang-001", "result_id": f"IMG{i:09d}", "version": 1, "status": "final",
        "patient": {"pseudonym": patient or pseudonym(i), "key_id": KEY_ID, "sex": None, "birth_year": None},
        "item": {"unified_code": "I0001", "local_code": "CT/CHEST/plain", "local_system": "dicom",
                 "local_name": "胸部CT平扫", "mapping_version": None, "mapping_issue": None},
        "study": {"study_instance_uid": f"1.2.156.1.{i}", "accession_number": f"A{i}", "modality": "CT",
                  "body_part": "CHEST", "technique": "plain", "description": "CT chest", "series_count": 2,
                  "instance_count": 300, "study_at": (reported_at - timedelta(hours=1)).isoformat()},
        "report": {"findings": "两肺纹理清晰。", "impression": "未见异常。"},
        "retrieval": {"ae_title": "PACS", "host": "pacs.example", "port": 104, "wado_rs": None},
        "reported_at": reported_at.isoformat(),
        "source": {"adapter": "dicom", "message_id": None, "received_at": reported_at.isoformat()},
    }


#: Column order of the store's tables as the bulk loaders (COPY / executemany) write them: derived from the
#: models, so a new column makes the loaders fail loudly instead of drifting.
def _columns(model: Any) -> tuple[str, ...]:
    return tuple(c.name for c in model.__table__.columns)


RESULT_COLUMNS = _columns(Result)
OBS_COLUMNS = _columns(Observation)
