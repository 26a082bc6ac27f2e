"""imaging_mappings/<institution>/<version>.csv: studies map to unified imaging items per hospital, versioned
like the lab tables."""
from __future__ import annotations

from pathlib import Path

from codes import CodeBook, load_codebook
from codes.loader import load_dir

HEADER = "system,procedure_code,requested_procedure,study_description,modality,body_part,technique,unified_code,note\n"


def _problems(data: Path) -> dict[int, str]:
    _, problems = load_dir(data)
    return {p.line: p.message for p in problems if "imaging_mappings" in p.file or "mappings" in p.file}


def test_the_lookup_order_and_description_matching(book: CodeBook) -> None:
    def study(**kw):  # type: ignore[no-untyped-def]
        shape = {"modality": "CT", "body_part": None, "technique": "contrast"} | kw
        return book.map_study("zj-hz-001", shape.pop("codes", []), **shape)

    # a procedure code wins over everything the study says about itself
    assert study(codes=[("ECG12", None)], study_description="e+1").unified_code == "F0001"
    # descriptions are compared after normalisation (width, case, spaces)
    assert study(study_description="  E+1 ").unified_code == "I0014"
    assert study(requested_procedure="胸部 CT 增强").matched_by == "requested_procedure"
    # a description row limited to CT does not match an MR study
    assert study(modality="MR", study_description="e+1", technique="contrast") is None
    # the shape row: MR with no body part, plain (technique None is plain)
    assert study(modality="mr", technique=None).unified_code == "I0070"
    assert study(modality="MR", body_part="KNEE", technique=None) is None
    assert book.map_study("zj-nb-001", [], modality="MR", body_part=None, technique=None) is None  # no table


def test_versions_the_highest_applies(data_copy: Path) -> None:
    folder = data_copy / "imaging_mappings" / "zj-hz-001"
    (folder / "v2.csv").write_text(HEADER + ",,,e+1,CT,,,I0015,now plain+contrast\n", "utf-8")
    book = load_codebook(data_copy)
    assert book.imaging_mapping_version("zj-hz-001") == "v2"
    assert book.map_study("zj-hz-001", [], modality="CT", body_part=None, technique="contrast",
                          study_description="e+1").unified_code == "I0015"
    assert book.map_study("zj-hz-001", [("CT-HEAD-P", None)], modality="CT", body_part=None, technique=None) is None
    assert book.map_study("zj-hz-001", [("CT-HEAD-P", None)], modality="CT", body_part=None, technique=None,
                          version="v1").unified_code == "I0001"


def test_rows_are_validated(data_copy: Path) -> None:
    folder = data_copy / "imaging_mappings" / "zj-hz-001"
    (folder / "v1.csv").write_text(HEADER + "\n".join([
        ",P1,,,,,,L0032,a lab item",
        ",P2,胸部CT,,,,,I0013,two keys",
        ",,,,CT,,,I0013,no key (a shape needs a technique)",
        ",,,,CT,CHEST,enhanced,I0013,unknown technique",
        ",,,,ct,chest,plain,I0013,shape",
        ",,,,CT,CHEST,plain,I0013,duplicate shape",
        ",,,胸部,CT,CHEST,,I0013,a description row with a body part",
        ",P3,,,,,,I9999,unknown item",
    ]) + "\n", "utf-8")
    (data_copy / "imaging_mappings" / "nope-001").mkdir()
    got = _problems(data_copy)
    assert "L0032 is a lab item" in got[2]
    assert "procedure_code and requested_procedure are both filled" in got[3]
    assert "a row needs a procedure_code" in got[4]
    assert "technique 'enhanced' must be one of" in got[5]
    assert 6 not in got  # lower-case DICOM values are taken upper-case
    assert "duplicate shape row (first on line 6)" in got[7]
    assert "a description row may name a modality, but no body_part or technique" in got[8]
    assert "unknown unified_code 'I9999'" in got[9]
    _, problems = load_dir(data_copy)
    assert any("unknown institution 'nope-001'" in p.message for p in problems)


def test_lab_tables_refuse_exam_items(data_copy: Path) -> None:
    table = data_copy / "mappings" / "zj-nb-001" / "v1.csv"
    lines = table.read_text("utf-8").rstrip("\n").splitlines()
    table.write_text("\n".join(lines + [",CT-HEAD,,头颅CT,I0001,,,,"]) + "\n", "utf-8")
    _, problems = load_dir(data_copy)
    [problem] = [p for p in problems if p.file.endswith("zj-nb-001/v1.csv")]
    assert problem.line == len(lines) + 1
    assert problem.message == "I0001 is an exam item (imaging): map studies in imaging_mappings/zj-nb-001/<version>.csv"


def test_one_imaging_table_is_validated_on_its_own(data_copy: Path) -> None:
    from codes.tools import validate

    table = data_copy / "imaging_mappings" / "zj-hz-001" / "v3.csv"
    table.write_text(HEADER + ",,,,CT,CHEST,glowing,I0013,\n", "utf-8")
    assert [(p.line, p.message) for p in validate([table])] == [
        (2, "technique 'glowing' must be one of plain, contrast, plain+contrast, angiography, doppler, resting, "
            "ambulatory, exercise")]
    assert validate([data_copy / "imaging_mappings" / "zj-hz-001" / "v1.csv"]) == []
