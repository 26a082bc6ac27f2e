"""``python -m fuzz [--seconds N] [--keep] [--prune] [--work DIR] [TARGET ...]``: run the harnesses one after
the other and print what each did.

TARGET is any of hl7, csv, fhir, dicom (default: all). Each runs for N seconds (default 600) under libFuzzer,
starting from its corpus ``fuzz/corpus/<target>/``; the inputs it finds go to ``DIR/corpus/<target>/``
(``DIR`` defaults to ``var/fuzz``), a crashing input to ``DIR/crashes/<target>/``, its output to
``DIR/logs/<target>.log``. A crash is an exception the harness does not expect, an input running longer
than ``--input-timeout`` seconds, or a process above ``--rss-limit-mb``; the run of that target stops there.

``--keep`` merges the inputs found that reach new coverage into ``fuzz/corpus/<target>/`` (libFuzzer
``-merge=1``), and prunes that corpus when it grows past 2 MB; ``--prune`` shrinks ``fuzz/corpus/<target>/``
to the inputs that add coverage before the run. The ``seed-*`` files (``python -m fuzz.seeds``) always stay.
Exit status 1 when a target crashed or did not run.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from fuzz import TARGETS
from fuzz.harness import WORK_ENV

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
DICTIONARIES = ROOT / "fuzz" / "dictionaries"
#: Above this a kept corpus slows every run down; ``--prune`` it.
CORPUS_BUDGET_BYTES = 2 * 1024 * 1024
#: What libFuzzer names the input of a crash (``-artifact_prefix``): an exception, a hang, memory.
ARTIFACT_KINDS = ("crash", "timeout", "oom", "leak")
_STATUS_LINE = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/", re.MULTILINE)
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.MULTILINE)


@dataclass
class TargetRun:
    """What one harness did: executions, coverage (libFuzzer's ``cov`` edges and ``ft`` features), the
    corpus, the crashing inputs."""

    target: str
    seconds: float
    executions: int = 0
    exec_per_second: int = 0
    coverage: int = 0
    features: int = 0
    corpus_files: int = 0
    new_inputs: int = 0
    kept: int = 0
    peak_rss_mb: int = 0
    crashes: list[str] = field(default_factory=list)
    problem: str | None = None  # why the target did not run to its end, if it did not
    log: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.crashes) or self.problem is not None or self.executions == 0


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in _files(directory))


def _harness(target: str, work: Path) -> list[str]:
    """The command line of one harness, with the libFuzzer options every run shares."""
    return [sys.executable, "-m", f"fuzz.{target}", f"-artifact_prefix={work / 'crashes' / target}/"]


def _limits(args: argparse.Namespace) -> list[str]:
    return [f"-timeout={args.input_timeout}", f"-rss_limit_mb={args.rss_limit_mb}"]


def _run(command: list[str], log: Path, work: Path, wall_seconds: float) -> int | None:
    """Run a harness process from the repository root, its output into ``log``; None when it overran."""
    env = {**os.environ, WORK_ENV: str(work / "scratch")}
    with log.open("wb") as out:
        try:
            return subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=wall_seconds).returncode
        except subprocess.TimeoutExpired:
            return None


def fuzz_target(target: str, args: argparse.Namespace) -> TargetRun:
    work: Path = args.work
    found, crashes, logs = work / "corpus" / target, work / "crashes" / target, work / "logs"
    for directory in (found, crashes, logs, CORPUS / target):
        directory.mkdir(parents=True, exist_ok=True)
    known = {p.name for p in _files(found)}
    command = _harness(target, work) + _limits(args) + [f"-max_total_time={args.seconds}", "-print_final_stats=1"]
    if args.seed is not None:
        command.append(f"-seed={args.seed}")
    dictionary = DICTIONARIES / f"{target}.dict"
    if dictionary.exists():
        command.append(f"-dict={dictionary}")
    command += [str(found), str(CORPUS / target)]
    log = logs / f"{target}.log"
    started, wall_started = time.monotonic(), time.time()
    # Imports and the first pass over the corpus come on top of -max_total_time; past this margin it hangs.
    code = _run(command, log, work, args.seconds + 300)
    run = TargetRun(target, round(time.monotonic() - started, 1), log=str(log))
    output = log.read_text(errors="replace")
    lines = _STATUS_LINE.findall(output)
    if lines:
        run.coverage, run.features, run.corpus_files = (int(x) for x in lines[-1][1:])
    stats = {name: int(value) for name, value in _STAT.findall(output)}
    run.executions = stats.get("number_of_executed_units", int(lines[-1][0]) if lines else 0)
    run.exec_per_second = stats.get("average_exec_per_sec", 0)
    run.peak_rss_mb = stats.get("peak_rss_mb", 0)
    run.new_inputs = len([p for p in _files(found) if p.name not in known])
    # an input found again is written again (same name: the SHA-1 of its content), hence by time, not by name
    run.crashes = [str(p) for p in _files(crashes)
                   if p.name.startswith(ARTIFACT_KINDS) and p.stat().st_mtime >= wall_started - 1]
    if code is None:
        run.problem = f"still running {args.seconds + 300} s after it started (killed)"
    elif code != 0 and not run.crashes:
        # seen once: the process died of SIGALRM while reporting an exception, before writing the input
        run.problem = (f"exited with status {code}" + (", after an exception it did not write the input of"
                                                      if "Uncaught Python exception" in output else ""))
    return run


def keep(target: str, args: argparse.Namespace) -> int:
    """Merge the inputs found into the kept corpus (only those reaching new coverage); how many were added."""
    kept, found = CORPUS / target, args.work / "corpus" / target
    before = len(_files(kept))
    command = _harness(target, args.work) + _limits(args) + ["-merge=1", str(kept), str(found)]
    _run(command, args.work / "logs" / f"{target}-merge.log", args.work, 3600)
    return len(_files(kept)) - before


def prune(target: str, args: argparse.Namespace) -> int:
    """Shrink the kept corpus to the inputs that add coverage (seeds stay); how many files were removed."""
    kept = CORPUS / target
    with tempfile.TemporaryDirectory() as tmp:
        command = _harness(target, args.work) + _limits(args) + ["-merge=1", tmp, str(kept)]
        code = _run(command, args.work / "logs" / f"{target}-prune.log", args.work, 3600)
        if code != 0:
            return 0
        needed = {p.name for p in _files(Path(tmp))}  # -merge names each file by the SHA-1 of its content
    removed = 0
    for path in _files(kept):
        if not path.name.startswith("seed-") and hashlib.sha1(path.read_bytes()).hexdigest() not in needed:
            path.unlink()
            removed += 1
    return removed


def report(runs: list[TargetRun]) -> str:
    rows = [("target", "seconds", "executions", "exec/s", "cov", "ft", "corpus", "found", "kept", "crashes")]
    rows += [(r.target, f"{r.seconds:.0f}", f"{r.executions:,}", f"{r.exec_per_second:,}", str(r.coverage),
              str(r.features), str(len(_files(CORPUS / r.target))), str(r.new_inputs), str(r.kept),
              str(len(r.crashes))) for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    for r in runs:
        lines += [f"{r.target}: CRASH {path} (replay: python -m fuzz.{r.target} {path}; log {r.log})"
                  for path in r.crashes]
        if r.problem or not r.executions:
            lines.append(f"{r.target}: {r.problem or 'no input was run'} (log {r.log})")
        if _size(CORPUS / r.target) > CORPUS_BUDGET_BYTES:
            lines.append(f"{r.target}: fuzz/corpus/{r.target} is over {CORPUS_BUDGET_BYTES >> 20} MB: "
                         "run with --prune")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", choices=[[], *TARGETS], metavar="TARGET",
                        help=f"any of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--seconds", type=int, default=600, help="how long each target runs (default 600)")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "fuzz",
                        help="inputs found, crashes and logs (default var/fuzz)")
    parser.add_argument("--seed", type=int, help="libFuzzer's random seed (default: a new one each run); a fixed "
                        "seed makes a short run repeat the same mutations")
    parser.add_argument("--keep", action="store_true", help="merge the inputs reaching new coverage into fuzz/corpus")
    parser.add_argument("--prune", action="store_true", help="shrink fuzz/corpus to inputs adding coverage")
    parser.add_argument("--input-timeout", type=int, default=10, help="seconds one input may take (default 10)")
    parser.add_argument("--rss-limit-mb", type=int, default=2048, help="memory limit of a harness (default 2048)")
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    runs = []
    for target in args.targets or TARGETS:
        if args.prune:
            print(f"{target}: pruned {prune(target, args)} file(s) from fuzz/corpus/{target}", flush=True)
        print(f"{target}: fuzzing for {args.seconds} s …", flush=True)
        run = fuzz_target(target, args)
        if args.keep and not run.failed:
            run.kept = keep(target, args)
            if _size(CORPUS / target) > CORPUS_BUDGET_BYTES:
                print(f"{target}: pruned {prune(target, args)} file(s) from fuzz/corpus/{target} (over "
                      f"{CORPUS_BUDGET_BYTES >> 20} MB)", flush=True)
        runs.append(run)
    print(report(runs))
    (args.work / "summary.json").write_bytes(orjson.dumps([asdict(r) for r in runs], option=orjson.OPT_INDENT_2))
    return 1 if any(r.failed for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
