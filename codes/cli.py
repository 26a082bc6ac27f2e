"""``hrx catalogue ...`` commands (a click group mounted by the hrx CLI).

Output is Chinese-first for people; ``--json`` gives machine output. Every command honours
``--codes DIR`` / $HRX_CODES_DIR for the code data directory.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from datetime import date, datetime
from pathlib import Path
from typing import Sequence

import click

from codes.book import ENV_VAR, default_codes_dir, load_codebook
from codes.importer import import_published
from codes.calendar import BEIJING
from codes.model import TIERS, CodeError
from codes.tools import coverage, diff, diff_as_dict, validate

TIER_ZH = {"alliance": "医联体", "city": "市域", "province": "省域", "region": "区域", "national": "全国"}


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table that lines up with CJK characters (two columns wide)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for n, r in enumerate(cells):
        out.append("  ".join(c + " " * (widths[i] - _width(c)) for i, c in enumerate(r)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


META_KEY = "hrx.codes_dir"


def _codes_dir(ctx: click.Context) -> Path:
    # ctx.meta is shared by every context of one invocation, whatever ``obj`` the hrx CLI uses
    chosen = ctx.meta.get(META_KEY)
    return Path(chosen) if chosen else default_codes_dir()


def _load(ctx: click.Context):
    try:
        return load_codebook(_codes_dir(ctx))
    except CodeError as exc:
        for p in exc.problems:
            click.echo(str(p), err=True)
        raise click.ClickException(f"代码数据有 {len(exc.problems)} 个问题，请先运行 hrx catalogue validate") from exc


def _parse_at(value: str | None) -> datetime:
    if not value:
        return datetime.now(BEIJING)
    parsed = datetime.fromisoformat(value) if len(value) > 10 else datetime.combine(date.fromisoformat(value), datetime.min.time())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=BEIJING)


@click.group(name="catalogue", help="互认目录工具：校验、覆盖率、导入、版本比较。")
@click.option("--codes", "codes_dir", type=click.Path(file_okay=False, path_type=Path), envvar=ENV_VAR,
              help="code data directory (default: $HRX_CODES_DIR or the shipped demo)")
@click.pass_context
def catalogue(ctx: click.Context, codes_dir: Path | None) -> None:
    """Catalogue commands."""
    ctx.meta[META_KEY] = codes_dir


@catalogue.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.pass_context
def validate_cmd(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Check data directories, catalogue files or mapping tables; every problem with file:line.

    Without PATH the code data directory itself is checked. Exits 1 when anything is wrong.
    """
    targets = list(paths) or [_codes_dir(ctx)]
    problems = validate(targets, reference=ctx.meta.get(META_KEY))
    for p in problems:
        click.echo(str(p))
    if problems:
        click.echo(f"共 {len(problems)} 个问题。", err=True)
        sys.exit(1)
    click.echo(f"通过：{', '.join(str(t) for t in targets)} 无问题。")


@catalogue.command("coverage")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--at", "at", default=None, help="moment to evaluate (ISO date or datetime; default now)")
@click.pass_context
def coverage_cmd(ctx: click.Context, as_json: bool, at: str | None) -> None:
    """Items per tier and scope in force, against the targets of codes/data/coverage_targets.csv."""
    book = _load(ctx)
    when = _parse_at(at)
    rows = coverage(book, when)
    if as_json:
        click.echo(json.dumps({"at": when.isoformat(), "codes_version": book.version, "items_total": len(book.items),
                               "rows": [r.as_dict() for r in rows]}, ensure_ascii=False, indent=2))
        return
    click.echo(f"互认目录覆盖（{when.isoformat()}，统一项目 {len(book.items)} 项，数据版本 {book.version}）")
    table = [(TIER_ZH[r.tier], f"{r.scope_name} ({r.scope})", r.lab, r.exam, r.total, r.target,
              "达标" if r.meets else ("未达标" if r.meets is False else "-"), ",".join(r.catalogues)) for r in rows]
    click.echo(render_table(("层级", "范围", "检验", "检查", "合计", "目标", "结果", "目录"), table))


@catalogue.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tier", type=click.Choice(TIERS), required=True)
@click.option("--scope", required=True, help="alliance id, city/province code (330100 / 330000), region id or national")
@click.option("--id", "catalogue_id", default=None, help="catalogue id (default: TIER-SCOPE)")
@click.option("--authority", default="", help="issuing authority, e.g. 浙江省卫生健康委员会")
@click.option("--version", "version", default=None)
@click.option("--effective-from", "effective_from", default=None, help="ISO date (default today)")
@click.option("--valid-days", "valid_days", default=30, show_default=True, type=int, help="validity when the list gives none")
@click.option("--name", "name_zh", default=None, help="catalogue title")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="write YAML here (default stdout)")
@click.pass_context
def import_cmd(ctx: click.Context, file: Path, tier: str, scope: str, catalogue_id: str | None, authority: str,
               version: str | None, effective_from: str | None, valid_days: int, name_zh: str | None, out: Path | None) -> None:
    """Import a published list (CSV in GBK or UTF-8, or .xlsx) and report every row not matched. Exits 1 if any."""
    book = _load(ctx)
    eff = date.fromisoformat(effective_from) if effective_from else None
    from tqdm import tqdm

    lines = len(file.read_bytes().splitlines())
    # disable=None: a bar on a terminal only (stderr); the YAML goes to stdout
    with tqdm(total=lines, desc="catalogue import", unit="row", file=sys.stderr, disable=None, leave=False) as bar:
        result = import_published(file, tier, scope, book, catalogue_id=catalogue_id, authority=authority,
                                  version=version, effective_from=eff, default_valid_days=valid_days,
                                  name_zh=name_zh, progress=bar.update)
    if out is not None:
        out.write_text(result.yaml_text, encoding="utf-8")
        click.echo(f"已写入 {out}", err=True)
    else:
        click.echo(result.yaml_text, nl=False)
    for row in result.unmatched:
        click.echo(f"{file}:{row.line}: {row.name}: {row.reason}", err=True)
    if result.unmatched:
        click.echo(f"{len(result.unmatched)} 行未导入（见上）。", err=True)
        sys.exit(1)


@catalogue.command("diff")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def diff_cmd(ctx: click.Context, old: Path, new: Path, as_json: bool) -> None:
    """Added, removed and changed items between two catalogue versions."""
    d = diff(old, new, reference=ctx.meta.get(META_KEY))
    try:
        book = load_codebook(_codes_dir(ctx))
    except CodeError:
        book = None
    if as_json:
        click.echo(json.dumps(diff_as_dict(d, book), ensure_ascii=False, indent=2))
    else:
        if d.problems:
            for p in d.problems:
                click.echo(str(p), err=True)
            raise click.ClickException("目录文件有错误，无法比较")
        name = (lambda c: book.items[c].name_zh if book and c in book.items else "")
        for f, a, b in d.header:
            click.echo(f"~ {f}: {a} -> {b}")
        for c in d.added:
            click.echo(f"+ {c} {name(c)}")
        for c in d.removed:
            click.echo(f"- {c} {name(c)}")
        for ch in d.changed:
            click.echo(f"~ {ch.code} {name(ch.code)} {ch.field}: {ch.old} -> {ch.new}")
        click.echo(f"新增 {len(d.added)} 项，删除 {len(d.removed)} 项，变更 {len(d.changed)} 处。")
    if d.problems:
        sys.exit(1)


def main() -> None:  # pragma: no cover - convenience entry for `python -m codes.cli`
    """Run the catalogue group standalone."""
    catalogue(obj={})


if __name__ == "__main__":  # pragma: no cover
    main()
