"""The SQL store: results (every version), their current heads, observations and dead letters."""
from exchange.store.db import connect, migrate
from exchange.store.results import (Delivery, IngestReport, StoredObservation, StoredResult, UnmappedCode,
                                    current_results, ingest, record_dead_letter, unmapped_codes)
from exchange.store.write import pipelined

__all__ = ["connect", "migrate", "pipelined", "Delivery", "IngestReport", "StoredObservation", "StoredResult",
           "current_results", "ingest", "record_dead_letter", "UnmappedCode", "unmapped_codes"]
