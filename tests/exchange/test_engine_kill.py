"""SIGKILL the engine process in the middle of a stream; after a restart every event is stored exactly once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from sqlalchemy import func, select

from schemas import events
from schemas.topics import TOPIC_LAB
from adapters.publish import Publisher, Record
from exchange.store.models import Observation, Result
from tests.fixtures.pseudonyms import TEST_KEY
from tests.fixtures.waiting import wait_for
from tests.fixtures.events import lab_event

TOTAL = 3000


def _engine(bootstrap: str, database_url: str, tmp_path) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    env = {**os.environ, "HRX_KAFKA_BOOTSTRAP": bootstrap, "HRX_DATABASE_URL": database_url,
           "HRX_VAR_DIR": str(tmp_path), "HRX_ENGINE_GROUP": "kill-test",
           "HRX_PSEUDONYM_KEY": TEST_KEY.decode()}  # the engine refuses to start without the exchange's key
    return subprocess.Popen([sys.executable, "-m", "exchange.cli", "engine"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "engine.log", "ab"))  # noqa: SIM115


def test_sigkill_mid_stream_loses_and_duplicates_nothing(broker, database, database_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    def stored() -> int:
        with database.connect() as conn:
            return conn.execute(select(func.count()).select_from(Result)).scalar_one()

    publisher = Publisher(broker.bootstrap)
    stream = [lab_event(result_id=f"K{i}", patient=f"{i % 97:064x}") for i in range(TOTAL)]

    def produce() -> None:
        for start in range(0, TOTAL, 100):
            publisher.publish(Record(TOPIC_LAB, e["patient"]["pseudonym"], events.encode(e))
                              for e in stream[start:start + 100])
            time.sleep(0.05)

    producer = threading.Thread(target=produce)
    engine = _engine(broker.bootstrap, database_url, tmp_path)
    producer.start()
    try:
        wait_for(lambda: stored() >= 300, timeout=60)
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
        killed_at = stored()
        assert 0 < killed_at < TOTAL, "the kill must land in the middle of the stream"
        producer.join(60)
        engine = _engine(broker.bootstrap, database_url, tmp_path)
        wait_for(lambda: stored() >= TOTAL, timeout=90)
        time.sleep(1.0)  # let any replayed batch land: it must not add rows
    finally:
        engine.terminate()
        engine.wait(15)
        publisher.close()
    with database.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Result)).scalar_one() == TOTAL
        assert conn.execute(select(func.count(func.distinct(Result.result_id)))).scalar_one() == TOTAL
        assert conn.execute(select(func.count()).select_from(Observation)).scalar_one() == TOTAL
