"""``python -m fuzz.seeds``: (re)write the seed inputs of ``fuzz/corpus/<target>/`` from the test data.

The seeds are the files named ``seed-*``: the messages, exports and Bundles of tests/data, the CSV exports of
the other two profiles as tests/adapters/csv writes them, and the DICOM test studies of
tests/adapters/dicom/dicomdata.py (pydicom's CT and MR images made into a Chinese hospital's studies, and an
SR report) encoded in each transfer syntax. Other files of a corpus are inputs the fuzzer found and
``python -m fuzz --keep`` merged in; they are left alone.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fuzz.__main__ import CORPUS

TESTS = Path(__file__).resolve().parent.parent / "tests"


def _copy(target: str, paths: list[Path]) -> None:
    for path in paths:
        shutil.copyfile(path, CORPUS / target / f"seed-{path.name}")


def csv_seeds() -> None:
    from tests.adapters.csv.csvdata import RID_A, RID_B, lis_row, write_export

    _copy("csv", sorted((TESTS / "data" / "csv").iterdir()))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # as in tests/adapters/csv/test_decode.py: the detail profile (GBK, tabs) and the English one (BOM, ';')
        detail_header = ["证件号码", "病人姓名", "性别", "出生日期", "检验单号", "报告版本", "组合代码", "组合名称",
                         "检验项目代码", "检验项目", "LOINC", "结果类型", "结果值", "结果单位", "参考下限", "参考上限",
                         "结果提示", "审核状态", "采集时间", "审核时间"]
        common = [RID_A, "钱七", "男", "1970/01/01", "XC-0001", "4", "BJXCBLD-CBC", "血常规"]
        detail = write_export(work, [
            common + ["BJXCGLU", "葡萄糖", "", "数值", "99", "mg/dL", "70", "110", "", "已审核", "2025/03/02 07:05",
                      "2025/03/02 09:30"],
            common + ["X-UNKNOWN", "红细胞形态", "", "文本", "正常", "", "", "", "", "已审核", "2025/03/02 07:05",
                      "2025/03/02 09:40"]], header=detail_header, sep="\t", encoding="gbk", name="detail-zh-gbk.tsv")
        english = work / "generic-en-bom.csv"
        rows = [["Resident ID", "Patient Name", "Sex", "Date of Birth", "Report No", "Test Code", "Test Name",
                 "Result", "Units", "Ref Range", "Flag", "Status", "Collected", "Reported"],
                [RID_B, "Jane Roe", "F", "1992-11-11", "EN-1", "CRP", "C-reactive protein", "12.5", "mg/L", "0-10",
                 "H", "F", "2025-03-03 08:00", "2025-03-03T11:00:00+08:00"]]
        english.write_bytes(b"\xef\xbb\xbf" + ("LIS export\r\n" + "\r\n".join(";".join(r) for r in rows)).encode())
        quoted = lis_row(report="Q1", result="阳性", unit="", ref="")
        quoted[6] = '"多行\n项目名称"'
        generic = write_export(work, [",".join(quoted), "", ",".join(lis_row(report="Q2")) + ","],
                               name="generic-zh-quoted.csv")
        _copy("csv", [detail, english, generic])


def dicom_seeds() -> None:
    import pydicom
    from pynetdicom.dsutils import encode

    from tests.adapters.dicom.dicomdata import ct_study, mr_study

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = ct_study(work / "ct", slices=1).files + mr_study(work / "mr").files
        for path in files:
            ds = pydicom.dcmread(path)
            del ds.file_meta
            # the encoding byte of fuzz/dicom.py, then the data set as a C-STORE carries it
            for choice, (implicit, little, deflated) in enumerate(((True, True, False), (False, True, False),
                                                                  (False, False, False), (False, True, True))):
                data_set = encode(ds, implicit, little, deflated)
                (CORPUS / "dicom" / f"seed-{path.stem}-{choice}.bin").write_bytes(bytes([choice]) + data_set)


def main() -> None:
    for target in ("hl7", "csv", "fhir", "dicom"):
        (CORPUS / target).mkdir(parents=True, exist_ok=True)
        for old in (CORPUS / target).glob("seed-*"):
            old.unlink()
    _copy("hl7", sorted((TESTS / "data" / "hl7").iterdir()))
    _copy("fhir", sorted((TESTS / "data" / "fhir").iterdir()))
    csv_seeds()
    dicom_seeds()


if __name__ == "__main__":
    main()
