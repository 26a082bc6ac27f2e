"""What the fault scenarios send through each door: synthetic reports, one key each.

Every item is one report in one version, so the oracle expects exactly one stored row per key
(issuer, result_id). FHIR Bundles and HL7 messages are the benchmarks' (``bench.fhir``, ``bench.mllp``: the
sample message in tests/data/hl7 with fresh identifiers); CSV exports follow the ``lis-generic-zh`` profile;
DICOM studies are pydicom's ``CT_small.dcm`` with new UIDs (as ``bench.dicom``). Patients are synthetic,
with valid resident IDs.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import orjson

from chaos.stores import Key

HL7_INSTITUTION = "bj-chaoyang-001"
CSV_INSTITUTION = "zj-hz-001"
CSV_PROFILE = "lis-generic-zh"
DICOM_INSTITUTION = "bj-xicheng-001"
DICOM_INSTANCES_PER_STUDY = 3


@dataclass
class Item:
    """What a door is sent in one go (a Bundle, a message, a study, an export file) and the keys of the reports
    it holds: bytes, or files (a DICOM study's instances, a CSV export)."""

    keys: list[Key]
    payload: bytes = b""
    files: list[Path] = field(default_factory=list)


def resident_id(n: int) -> str:
    """A valid synthetic resident ID, a different one for each ``n`` below 25 million."""
    from schemas.resident_id import make_resident_id

    born = date(1940, 1, 1) + timedelta(days=(n // 1000) % 25_000)
    return make_resident_id(f"310115{born:%Y%m%d}{n % 1000:03d}")


def fhir_item(n: int, tag: int) -> Item:
    """A Bundle of one lab report (``POST /fhir``); the report id is the result id."""
    from bench.fhir import bundles

    bundle = bundles(1, seed=tag * 1_000_000 + n)[0]
    issuer = report_id = ""
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["identifier"][0]["value"] = resident_id(tag * 100_000 + n)
        elif resource["resourceType"] == "Organization":
            issuer = resource["identifier"][0]["value"]
        elif resource["resourceType"] == "DiagnosticReport":
            report_id = f"FHIR-{tag}-{n:07d}"
            resource["identifier"][0]["value"] = report_id
    return Item([(issuer, report_id)], orjson.dumps(bundle))


def hl7_item(n: int, tag: int) -> Item:
    """An ORU^R01 of one report (the benchmarks' sample message); OBR-3, the filler order number, is the
    result id."""
    from bench.mllp import SAMPLE

    text = SAMPLE.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r")
    filler = f"CH{tag}-{n:07d}"
    message = (text.replace(b"CY20240315000123", f"M{tag}-{n:07d}".encode())  # MSH-10, the control id
               .replace(b"CY2403150088", filler.encode())
               .replace(b"110105198003120024", resident_id(tag * 100_000 + 50_000 + n).encode()))
    return Item([(HL7_INSTITUTION, filler)], message)


def csv_export(directory: Path, n: int, tag: int, reports: int) -> Item:
    """An LIS export file (profile ``lis-generic-zh``) of ``reports`` one-row reports; the report number is
    the result id."""
    header = ["身份证号", "姓名", "性别", "出生日期", "报告单号", "项目代码", "项目名称", "结果", "单位", "参考范围",
              "异常标识", "报告状态", "采样时间", "报告时间"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    keys: list[Key] = []
    for k in range(reports):
        number = f"CSV-{tag}-{n:05d}-{k:03d}"
        rid = resident_id(tag * 100_000 + 80_000 + n * reports + k)
        writer.writerow([rid, "测试", "女", f"{rid[6:10]}-{rid[10:12]}-{rid[12:14]}", number, "GLU", "葡萄糖",
                         f"{4 + k % 30 / 10:.1f}", "mmol/L", "3.9-6.1", "", "终审", "2025-03-01 08:00:00",
                         "2025-03-01 10:00:00"])
        keys.append((CSV_INSTITUTION, number))
    path = directory / f"export-{tag}-{n:05d}.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return Item(keys, files=[path])


def dicom_study(directory: Path, n: int, tag: int, instances: int = DICOM_INSTANCES_PER_STUDY) -> Item:
    """A CT study of ``instances`` instances of one patient; the accession number is the result id."""
    import pydicom
    from pydicom.uid import generate_uid

    from bench.dicom import ct_small

    ds = pydicom.dcmread(ct_small())
    if "TimezoneOffsetFromUTC" in ds:
        del ds.TimezoneOffsetFromUTC
    rid = resident_id(tag * 100_000 + 90_000 + n)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientID, ds.IssuerOfPatientID = rid, "NNCHN"
    ds.PatientBirthDate, ds.PatientSex = rid[6:14], "F"
    ds.BodyPartExamined, ds.StudyDescription = "CHEST", "CT 胸部"
    accession = f"CHAOS-{tag}-{n:05d}"
    ds.AccessionNumber = accession
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(instances):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        path = directory / f"{accession}-{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return Item([(DICOM_INSTITUTION, accession)], files=files)
