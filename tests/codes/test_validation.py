"""Validation reports every problem with file and line, and load_codebook refuses bad data."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from codes import CodeError, load_codebook
from codes.cli import catalogue
from codes.tools import validate


HEADER = """id: test-cat
tier: province
scope: "330000"
authority: 测试卫健委
version: "1"
effective_from: 2024-01-01
effective_to: null
items:
"""


def lines_of(problems, file: Path) -> dict[int, str]:
    return {p.line: p.message for p in problems if Path(p.file).name == file.name}


def test_unknown_and_duplicate_items(tmp_path):
    f = write(tmp_path / "cat.yaml", HEADER + "  - {code: L0001, valid_days: 7}\n  - {code: L9999}\n  - {code: L0001}\n  - {code: L0002, valid_days: -3}\n")
    problems = validate([f])
    got = lines_of(problems, f)
    assert "unknown item code L9999" in got[10]
    assert "duplicate item L0001 (first on line 9)" in got[11]
    assert "valid_days must be a positive integer" in got[12]


def test_bad_scope_codes(tmp_path):
    cases = {
        "province": ("330100", "not a known province code"),
        "city": ("339900", "not a known prefecture-level city code"),
        "region": ("xyz", "unknown region"),
        "alliance": ("no-such", "unknown alliance"),
        "national": ("11", "national catalogues have scope 'national'"),
    }
    for tier, (scope, message) in cases.items():
        f = write(tmp_path / f"{tier}.yaml", HEADER.replace("tier: province", f"tier: {tier}").replace('"330000"', f'"{scope}"') + "  - {code: L0001}\n")
        got = lines_of(validate([f]), f)
        assert message in got.get(3, ""), (tier, got)


def test_short_scope_codes_are_normalised(book, tmp_path):
    f = write(tmp_path / "c.yaml", HEADER.replace("tier: province", "tier: city").replace('"330000"', '"3301"') + "  - {code: L0001}\n")
    assert validate([f]) == []


def test_overlapping_versions(tmp_path):
    a = write(tmp_path / "a.yaml", HEADER.replace("effective_to: null", "effective_to: 2025-01-01") + "  - {code: L0001}\n")
    b = write(tmp_path / "b.yaml", HEADER.replace('version: "1"', 'version: "2"').replace("2024-01-01", "2024-12-31 12:00:00+08:00") + "  - {code: L0001}\n")
    problems = validate([a, b])
    msgs = [str(p) for p in problems]
    assert any("b.yaml:6:" in m and "overlaps version 1" in m for m in msgs), msgs
    # touching ranges (to == next from) do not overlap
    c = write(tmp_path / "c.yaml", HEADER.replace('version: "1"', 'version: "2"').replace("2024-01-01", "2025-01-01") + "  - {code: L0001}\n")
    assert validate([a, c]) == []


def test_overlap_with_shipped_version(book):
    """A new file for an existing catalogue id is checked against the versions already in the data."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "jjj.yaml"
        f.write_text(HEADER.replace("id: test-cat", "id: jjj-lab").replace("tier: province", "tier: region")
                     .replace('"330000"', "jjj").replace('version: "1"', 'version: "2026"').replace("2024-01-01", "2024-06-01")
                     + "  - {code: L0001}\n", encoding="utf-8")
        msgs = [str(p) for p in validate([f])]
    assert any("overlaps version" in m for m in msgs), msgs


def test_structural_errors(tmp_path):
    f = write(tmp_path / "bad.yaml", "id: x\ntier: planet\nscope: \"1\"\nversion: \"1\"\neffective_from: 2024-01-01\neffective_to: 2023-01-01\nitems: []\nbogus: 1\n")
    msgs = [str(p) for p in validate([f])]
    assert any(":2: tier 'planet'" in m for m in msgs)
    assert any(":8: unknown field 'bogus'" in m for m in msgs)
    assert any("authority is required" in m for m in msgs)
    g = write(tmp_path / "syntax.yaml", "id: x\nitems: [\n")
    assert any("YAML syntax error" in str(p) for p in validate([g]))


def test_items_csv_problems_with_lines(data_copy):
    items = data_copy / "items.csv"
    text = items.read_text(encoding="utf-8").splitlines()
    text[1] = text[1].replace("1742-6", "1742-7")  # wrong check digit on line 2
    text[4] = text[4].replace("2324-2", "1920-8")  # line 5 reuses line 3's LOINC
    text[3] = text[3].replace("U/L", "IU/l")  # bad UCUM on line 4
    text.append(text[5])  # duplicate code at the end
    items.write_text("\n".join(text) + "\n", encoding="utf-8")
    problems = validate([data_copy])
    got = {(Path(p.file).name, p.line): p.message for p in problems}
    assert "fails its check digit" in got[("items.csv", 2)]
    assert "not UCUM" in got[("items.csv", 4)]
    assert "LOINC 1920-8 already used on line 3" in got[("items.csv", 5)]
    assert "duplicate item code" in got[("items.csv", len(text))]
    with pytest.raises(CodeError) as exc:
        load_codebook(data_copy)
    assert "items.csv:2:" in str(exc.value)


def test_institution_and_mapping_problems(data_copy):
    inst = data_copy / "institutions.yaml"
    inst.write_text(inst.read_text(encoding="utf-8").replace('division: "330102"', 'division: "339999"', 1), encoding="utf-8")
    write(data_copy / "mappings" / "zj-hz-001" / "v9.csv",
          "local_code,qualifier,unified_code,source_unit,factor\nGLU,,L0032,mg/dL,\nX,,L9999,,\nGLU,,L0032,,\n")
    write(data_copy / "mappings" / "ghost" / "v1.csv", "local_code,unified_code\nA,L0001\n")
    problems = validate([data_copy])
    msgs = [str(p) for p in problems]
    assert any("institutions.yaml" in m and "339999" in m for m in msgs)
    assert any("v9.csv:2:" in m and "no factor" in m for m in msgs)
    assert any("v9.csv:3:" in m and "unknown unified_code 'L9999'" in m for m in msgs)
    assert any("v9.csv:4:" in m and "duplicate mapping" in m for m in msgs)
    assert any("ghost" in m and "unknown institution" in m for m in msgs)


def test_cli_validate_exit_codes(tmp_path, book):
    runner = CliRunner()
    ok = runner.invoke(catalogue, ["validate"], obj={})
    assert ok.exit_code == 0, ok.output
    f = write(tmp_path / "cat.yaml", HEADER + "  - {code: L9999}\n")
    bad = runner.invoke(catalogue, ["validate", str(f)], obj={})
    assert bad.exit_code == 1
    assert f"{f}:9: unknown item code L9999" in bad.output


def test_env_var_selects_data(monkeypatch, data_copy):
    from codes.book import default_codes_dir
    monkeypatch.setenv("HRX_CODES_DIR", str(data_copy))
    assert default_codes_dir() == data_copy
    assert load_codebook().root == data_copy


def write(path, text):
    """Write UTF-8 text, creating parents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
