"""The fault suite (``make chaos``, ``python -m chaos [SCENARIO ...] [--short]``): faults injected into a
running exchange, each scenario with its oracle, printing its figures.

Scenarios (one module each):

- ``engine-kill`` (:mod:`chaos.engine_kill`): ``kill -9`` of the engine 30× mid-stream, SQLite and PostgreSQL;
- ``broker-restart`` (:mod:`chaos.broker_restart`): the embedded broker killed and restarted under load at
  every door (FHIR, HL7 MLLP, DICOM C-STORE, CSV);
- ``postgres-restart`` (:mod:`chaos.postgres_restart`): the PostgreSQL server restarted mid-ingest;
- ``spool-full`` (:mod:`chaos.spool_full`): the DICOM spool's file system full.

Beside them, not in the scenario list (it restarts nothing shared): :mod:`chaos.scale_out`, the deployment's
topology as processes (two APIs, three engines, both listeners, 12 partitions per results topic) with engines
killed, restarted and added under a stream through every door; run by tests/chaos/test_scale_out.py.

The rules each oracle checks are those of docs/rules.md, "Delivery". ``--short`` runs the small form that
``make test`` runs (tests/chaos/). The suite starts real processes on loopback ports, restarts the machine's
PostgreSQL (``postgres-restart``) and mounts a small tmpfs (``spool-full``, as root): run it alone.
"""
