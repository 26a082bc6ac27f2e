"""The SQL store: results (every version), their current heads, observations and dead letters."""
from exchange.store.db import Revisions, StoreNotMigrated, connect, migrate, require_current
from exchange.store.results import (Delivery, IngestReport, StoredObservation, StoredResult, UnmappedCode,
                                    current_results, ingest, record_dead_letter, unmapped_codes)
from exchange.store.write import pipelined

__all__ = ["connect", "migrate", "require_current", "Revisions", "StoreNotMigrated", "pipelined", "Delivery", "IngestReport", "StoredObservation", "StoredResult",
           "current_results", "ingest", "record_dead_letter", "UnmappedCode", "unmapped_codes"]
