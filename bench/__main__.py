"""``python -m bench [--quick] [NAME ...]``: run the benchmarks and write bench/results/<date>[-…].json and .md.

NAME is any of: ingest, recognition, fhir, e2e, memory, mllp, dicom, csv, cds_hooks,
scale_out (default: all, in priority order).
"""
from __future__ import annotations

import argparse
import importlib
import os
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.common import Outcome, code_version, machine, say, versions

ORDER = ("ingest", "recognition", "fhir", "e2e", "memory", "mllp", "dicom", "csv", "cds_hooks", "scale_out")
RESULTS = Path(__file__).resolve().parent / "results"


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def markdown(record: dict[str, Any]) -> str:
    m, v = record["machine"], record["versions"]
    lines = [f"# HR Exchange benchmarks — {record['date']} ({record['mode']})", "",
             f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}.  ",
             "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".  ",
             f"Command: `{record['command']}` at commit {record.get('code') or 'unknown'}; total "
             f"{record['seconds']:.0f} s.", ""]
    for b in record["benchmarks"]:
        lines += [f"## {b['name']}: {b['title']}", "", f"Status: **{b['status']}** ({b['seconds']:.0f} s; load average "
                  f"before {b.get('loadavg_before')}).", ""]
        if b["sizes"]:
            lines.append("Sizes: " + ", ".join(f"{k}={val}" for k, val in b["sizes"].items()) + ".")
            lines.append("")
        if b["ratios"]:
            lines += ["| ratio | value |", "| --- | --- |"] + [f"| {k} | {val} |" for k, val in b["ratios"].items()] + [""]
        if b["goals"]:
            lines += ["| goal | met |", "| --- | --- |"] + [f"| {k} | {'yes' if val else ('no' if val is not None else 'n/a')} |"
                                                          for k, val in b["goals"].items()] + [""]
        if b["figures"]:
            lines += ["```", orjson.dumps(b["figures"], option=orjson.OPT_INDENT_2).decode(), "```", ""]
        for note in b["notes"]:
            if "\n" in note:
                lines += ["<details><summary>" + note.splitlines()[0] + "</summary>", "", "```",
                          *note.splitlines()[1:], "```", "</details>", ""]
            else:
                lines += [f"- {note}"]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(ORDER))
    parser.add_argument("--quick", action="store_true", help="small sizes (about 3 minutes in all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for <date>.json and <date>.md")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in ORDER]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    names = args.names or list(ORDER)
    started = time.perf_counter()
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    record: dict[str, Any] = {"date": date, "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "mode": "quick" if args.quick else "full",
                              "command": "python -m bench" + (" --quick" if args.quick else "") +
                                         ("" if not args.names else " " + " ".join(args.names)),
                              "code": code_version(), "machine": machine(), "versions": versions(), "benchmarks": []}
    say(f"bench: {record['mode']} run of {', '.join(names)} on {record['machine']['nproc']} CPUs "
        f"({record['machine']['cpu']}), {record['machine']['memory_gib']} GiB")
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        say(f"\n=== {name} ===")
        load = _loadavg()
        t0 = time.perf_counter()
        try:
            outcome: Outcome = module.run(quick=args.quick)
        except Exception as exc:  # noqa: BLE001 - one failed benchmark must not lose the others' figures
            traceback.print_exc()
            outcome = Outcome(name, getattr(module, "__doc__", name).splitlines()[0], status="error",
                              notes=[f"failed: {exc!r}"])
        outcome.seconds = round(time.perf_counter() - t0, 1)
        entry = outcome.as_dict()
        entry["loadavg_before"] = load
        entry["loadavg_after"] = _loadavg()
        record["benchmarks"].append(entry)
    record["seconds"] = round(time.perf_counter() - started, 1)
    suffix = ("" if not args.names else "-" + "-".join(args.names)) + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{date}{suffix}.json"
    json_path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
    (args.out / f"{date}{suffix}.md").write_text(markdown(record), encoding="utf-8")
    say(f"\nbench: wrote {json_path} and .md in {record['seconds']:.0f} s")
    for b in record["benchmarks"]:
        goals = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in b["goals"].items()) or "-"
        say(f"  {b['name']:12s} {b['status']:8s} ratios {b['ratios']} goals {goals}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
