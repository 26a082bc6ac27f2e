"""Export files for the CSV adapter tests: the shipped sample, rows of the generic Chinese profile, a recorder
standing in for the broker."""
from __future__ import annotations

from pathlib import Path

import orjson

from adapters.csv import ImportSummary, import_file, load_profile
from adapters.pipeline import ResultPipeline
from schemas.resident_id import make_resident_id

DATA = Path(__file__).parent.parent.parent / "data/csv"
SAMPLE = DATA / "lis-generic-zh.csv"
SAMPLE_IDS = ("330106198503120028", "330102197001011016", "110105199007070030")
SAMPLE_NAMES = ("张三", "李四", "王五")
RID_A = make_resident_id("33010619850312002")
RID_B = make_resident_id("44030419921111123")
HEADER_ZH = ["身份证号", "姓名", "性别", "出生日期", "报告单号", "项目代码", "项目名称", "结果", "单位", "参考范围",
             "异常标识", "报告状态", "采样时间", "报告时间"]


class Recorder:
    """Stands in for the Kafka publisher: keeps what would have been published (and acknowledged)."""

    def __init__(self) -> None:
        self.records: list = []  # type: ignore[type-arg]

    def publish(self, records) -> None:  # type: ignore[no-untyped-def]
        self.records.extend(records)

    def close(self) -> None:
        pass

    def events(self, topic: str) -> list[dict]:  # type: ignore[type-arg]
        return [orjson.loads(r.value) for r in self.records if r.topic == topic]

    def text(self) -> str:
        return b"\n".join(r.value for r in self.records).decode()


def lis_row(rid: str = RID_A, report: str = "R1", code: str = "GLU", result: str = "5.6", unit: str = "mmol/L",
            ref: str = "3.9-6.1", flag: str = "", status: str = "终审", reported: str = "2025-03-01 10:00:00",
            name: str = "赵六", sex: str = "女", birth: str = "1985-03-12", item: str = "葡萄糖") -> list[str]:
    """The cells of one row under :data:`HEADER_ZH` (profile ``lis-generic-zh``)."""
    return [rid, name, sex, birth, report, code, item, result, unit, ref, flag, status, "2025-03-01 08:00:00",
            reported]


def write_export(tmp_path: Path, rows: list[list[str]] | list[str], *, header: list[str] = HEADER_ZH,
                 sep: str = ",", encoding: str = "utf-8", name: str = "export.csv", preamble: str = "") -> Path:
    """An export file of ``header`` and ``rows`` (cell lists, or lines as written), CRLF line ends."""
    lines = [sep.join(header)] + [r if isinstance(r, str) else sep.join(r) for r in rows]
    path = tmp_path / name
    path.write_bytes((preamble + "\r\n".join(lines) + "\r\n").encode(encoding))
    return path


def run_import(path: Path, pipeline: ResultPipeline, institution: str = "zj-hz-001",
               profile: str = "lis-generic-zh", **kwargs) -> ImportSummary:  # type: ignore[no-untyped-def]
    return import_file(path, institution, load_profile(profile), pipeline, **kwargs)


def write_many(path: Path, rows: int, per_report: int = 4) -> list[str]:
    """A ``lis-generic-zh`` export of ``rows`` rows, ``per_report`` consecutive rows per report, written a row
    at a time; the report numbers in file order."""
    codes = (("GLU", "5.6", "mmol/L"), ("K", "4.2", "mmol/L"), ("ALT", "40", "U/L"), ("NA", "140", "mmol/L"))
    reports: list[str] = []
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(",".join(HEADER_ZH) + "\r\n")
        for i in range(rows):
            n = i // per_report
            if i % per_report == 0:
                reports.append(f"M{n:07d}")
            code, result, unit = codes[i % per_report % len(codes)]
            moment = f"2025-03-{1 + n % 28:02d} {9 + n // 28 % 14:02d}:{n % 60:02d}:00"  # after sampling
            rid = make_resident_id(f"3301061985{1 + n % 12:02d}{1 + n % 28:02d}{n % 1000:03d}")
            out.write(",".join(lis_row(rid=rid, report=reports[-1], code=code, result=result, unit=unit, ref="",
                                       reported=moment, birth="")) + "\r\n")
    return reports


class Counter:
    """A publisher that acknowledges and counts records without keeping them."""

    bootstrap = None

    def __init__(self) -> None:
        self.records = 0

    def publish(self, records) -> None:  # type: ignore[no-untyped-def]
        for _ in records:
            self.records += 1

    def close(self) -> None:
        pass
