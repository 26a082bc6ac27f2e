"""8. CSV import: rows/s of ``adapters.csv.import_file`` on LIS exports of 20,000 and 200,000 rows, against a
bare ``csv.reader`` pass over the same file in the same run, and how the import's peak memory grows with the
file.

Ours: ``import_file`` with the ``lis-generic-zh`` profile (decode, check every row, group, build, map,
pseudonymize, validate, spill, publish in batches) into an in-memory publisher that acknowledges and counts
every record, so the figure is the door's own cost (no broker). Baseline: ``csv.reader`` over the same file
(UTF-8 decoding included), counting rows. Each size runs in a fresh child process (the baseline, then ours),
which also reports its peak RSS before and after the import.

Files: reports of 1–8 rows, each with its own patient (valid GB 11643 resident IDs), report and collection
times, and distinct analytes of zj-hz-001 with their units, reference ranges and a few flags.
"""
from __future__ import annotations

import csv
import multiprocessing
import random
import re
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Outcome, ratio, say

INSTITUTION = "zj-hz-001"
PROFILE = "lis-generic-zh"
HEADER = ["身份证号", "姓名", "性别", "出生日期", "报告单号", "项目代码", "项目名称", "结果", "单位", "参考范围", "异常标识",
          "报告状态", "采样时间", "报告时间"]
#: The goal for the large file: imported within this many seconds on a loaded 2-core host.
LARGE_SECONDS = 60.0


def write_export(path: Path, rows: int, seed: int = 88) -> int:
    """A ``lis-generic-zh`` export of ``rows`` rows (UTF-8, comma-separated), written a report at a time; the
    number of reports."""
    from bench.data import lab_codes
    from codes import load_codebook
    from schemas.resident_id import make_resident_id

    rng = random.Random(seed)
    codes = lab_codes()[INSTITUTION]
    bounds = load_codebook(None).bounds  # values stay physically possible (codes/data/item_bounds.csv)
    start = datetime(2026, 1, 1, 8, 0)
    written = reports = 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(HEADER)
        while written < rows:
            size = min(rows - written, rng.randint(1, 8))
            born = datetime(1940, 1, 1) + timedelta(days=rng.randrange(0, 80 * 365))
            resident = make_resident_id(f"330106{born:%Y%m%d}{rng.randrange(0, 1000):03d}")
            sex = "男" if int(resident[16]) % 2 else "女"
            collected = start + timedelta(minutes=7 * reports + rng.randrange(0, 7))
            reported = collected + timedelta(minutes=rng.randrange(30, 600))
            for local, unified, unit in rng.sample(codes, size):
                bound = bounds.get(unified)
                top = bound.max if bound is not None and bound.max is not None else 195.0
                low = round(rng.uniform(top / 195, top / 3.9), 1)  # value <= high * 1.3 <= low * 3.9 <= top
                high = round(low * rng.uniform(1.5, 3), 1)
                value = round(rng.uniform(low * 0.7, high * 1.3), 2)
                flag = "H" if value > high else "L" if value < low else ""
                writer.writerow([resident, "测试", sex, f"{born:%Y-%m-%d}", f"BENCH{seed}-{reports:08d}", local,
                                 local, value, unit or "", f"{low}-{high}", flag, "终审",
                                 f"{collected:%Y-%m-%d %H:%M:%S}", f"{reported:%Y-%m-%d %H:%M:%S}"])
            written += size
            reports += 1
    return reports


class CountingPublisher:
    """Acknowledges every record at once and counts it; keeps none."""

    bootstrap = None

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0

    def publish(self, records: Any) -> None:
        for record in records:
            self.records += 1
            self.bytes += len(record.value)

    def close(self) -> None:
        pass


def _status_mib(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (Linux), or None."""
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def _reset_peak_rss() -> bool:
    """Restart the peak (VmHWM) from the current RSS (Linux ≥ 4.0), so that loading the code book does not
    stand in for the import's peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(path: str, rows: int) -> dict[str, Any]:
    """In a fresh process: the bare csv.reader pass, then ``import_file``, with the peak RSS around it."""
    from adapters.csv import import_file, load_profile
    from adapters.pipeline import ResultPipeline
    from adapters.pseudonymize import Pseudonymizer
    from codes import load_codebook

    t0 = time.perf_counter()
    with open(path, encoding="utf-8", newline="") as text:
        bare_rows = sum(1 for _ in csv.reader(text)) - 1
    bare_seconds = time.perf_counter() - t0
    publisher = CountingPublisher()
    pipeline = ResultPipeline(load_codebook(), Pseudonymizer(b"hrx-bench-key-0123456789"), publisher)  # type: ignore[arg-type]
    profile = load_profile(PROFILE)
    reset = _reset_peak_rss()
    before = _status_mib("VmRSS")
    t0 = time.perf_counter()
    summary = import_file(path, INSTITUTION, profile, pipeline)
    seconds = time.perf_counter() - t0
    after = _status_mib("VmHWM") if reset else None
    return {"rows": rows, "bare_rows": bare_rows, "bare_seconds": bare_seconds, "seconds": seconds,
            "exit_code": summary.exit_code, "problems": [str(p) for p in summary.problems[:3]],
            "read_rows": summary.rows, "published_rows": summary.published_rows,
            "published_reports": summary.published_reports, "records": publisher.records,
            "published_mib": publisher.bytes / 2**20, "rss_before_mib": before, "peak_rss_mib": after}


def run(quick: bool = False, sizes: tuple[int, ...] | None = None) -> Outcome:
    sizes = sizes or ((2_000, 20_000) if quick else (20_000, 200_000))
    out = Outcome("csv", "CSV import: rows/s of import_file vs a bare csv.reader pass of the same file")
    out.sizes = {"rows": list(sizes), "institution": INSTITUTION, "profile": PROFILE, "rows_per_report": "1-8",
                 "publisher": "in-memory, acknowledges and counts"}
    spawn = multiprocessing.get_context("spawn")
    growth: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="hrx-bench-csv-") as tmp:
        for rows in sizes:
            path = Path(tmp) / f"export-{rows}.csv"
            reports = write_export(path, rows)
            file_mib = path.stat().st_size / 2**20
            with spawn.Pool(1) as pool:
                got = pool.apply(measure, (str(path), rows))
            path.unlink()
            ours, bare = rows / got["seconds"], got["bare_rows"] / got["bare_seconds"]
            if got["peak_rss_mib"] is not None and got["rss_before_mib"] is not None:
                growth[rows] = got["peak_rss_mib"] - got["rss_before_mib"]
            out.figures[f"{rows}_rows"] = {
                "reports": reports, "file_mib": round(file_mib, 1),
                "ours_seconds": round(got["seconds"], 2), "ours_rows_per_s": round(ours),
                "bare_csv_seconds": round(got["bare_seconds"], 3), "bare_csv_rows_per_s": round(bare),
                "published_reports": got["published_reports"], "published_rows": got["published_rows"],
                "records": got["records"], "published_mib": round(got["published_mib"], 1),
                "rss_before_mib": _round(got["rss_before_mib"]), "peak_rss_mib": _round(got["peak_rss_mib"]),
                "peak_rss_growth_mib": _round(growth.get(rows))}
            out.ratios[f"{rows}_rows_ours_vs_bare_csv"] = ratio(ours, bare)
            if got["exit_code"] != 0 or got["published_rows"] != rows or got["published_reports"] != reports:
                out.status = "error"
                out.notes.append(f"{rows} rows: exit {got['exit_code']}, published {got['published_rows']} row(s) "
                                 f"in {got['published_reports']} of {reports} report(s): {got['problems']}")
            say(f"csv: {rows:7d} rows: ours {ours:8.0f} rows/s ({got['seconds']:.1f} s), bare csv {bare:9.0f} rows/s, "
                f"ratio {out.ratios[f'{rows}_rows_ours_vs_bare_csv']}, peak RSS +{_round(growth.get(rows))} MiB")
    small, large = min(sizes), max(sizes)
    out.goals[f"{large}_rows_within_{LARGE_SECONDS:.0f}_s"] = out.figures[f"{large}_rows"]["ours_seconds"] <= LARGE_SECONDS
    # Ten times the rows should not cost ten times the memory: the import holds an index entry per report,
    # not the rows (the floor of a few MiB is the interpreter's own growth).
    out.goals[f"peak_rss_growth_{large}_le_3x_{small}_plus_16_mib"] = (
        growth[large] <= 3 * growth[small] + 16 if small in growth and large in growth else None)
    out.notes.append("peak RSS growth: the child's peak RSS during the import (VmHWM, reset just before) minus "
                     "its RSS before it, with the code book and modules already loaded")
    return out


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv).as_dict())
