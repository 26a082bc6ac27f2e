"""``python -m chaos [--short] [--json FILE] [SCENARIO ...]``: run fault scenarios, print their figures, exit 1
when any oracle failed.

SCENARIO is any of: engine-kill, broker-restart, postgres-restart, spool-full (default: all, in that order).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import time
import traceback
from pathlib import Path

import orjson

from chaos.figures import Figures
from chaos.processes import KEEP_ENV

SCENARIOS = {"engine-kill": "chaos.engine_kill", "broker-restart": "chaos.broker_restart",
             "postgres-restart": "chaos.postgres_restart", "spool-full": "chaos.spool_full"}


def run_scenario(name: str, short: bool) -> list[Figures]:
    """One scenario; an exception in the harness is reported as that scenario's failure, not lost."""
    module = importlib.import_module(SCENARIOS[name])
    try:
        return module.run(short=short)  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 - the other scenarios still run
        traceback.print_exc()
        figures = Figures(name, "harness")
        figures.failures.append(f"the scenario could not run: {exc!r}")
        return [figures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument("--short", action="store_true", help="the small form run by `make test`")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep each run's directory (logs, store) and print it")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.keep:
        os.environ[KEEP_ENV] = "1"
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # the faults make it complain, by design
    results: list[Figures] = []
    for name in args.scenarios or list(SCENARIOS):
        print(f"=== {name}{' (short)' if args.short else ''} ===", flush=True)
        started = time.monotonic()
        figures = run_scenario(name, args.short)
        for one in figures:
            print(one.line(), flush=True)
        print(f"({name}: {time.monotonic() - started:.0f} s)", flush=True)
        results += figures
    if args.json:
        args.json.write_bytes(orjson.dumps([f.as_dict() for f in results], option=orjson.OPT_INDENT_2) + b"\n")
    failed = [f for f in results if not f.ok]
    print(f"chaos: {len(results) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
