"""``hrx codes``: stored results against the code book (unmapped local codes, re-map)."""
from __future__ import annotations

import click
import orjson

from exchange.config import Settings


@click.group("codes")
def codes_group() -> None:
    """Stored results against the code book: unmapped local codes, re-evaluation after mapping changes."""


@codes_group.command("unmapped")
@click.option("--institution", help="only this issuer")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def codes_unmapped(institution: str | None, as_json: bool) -> None:
    """List codes that reached the store without a unified code, grouped by why (unknown code, unit not
    convertible, ambiguous), with how many results carry them."""
    from codes.issues import REASONS, reason_title
    from exchange import runtime
    from exchange.store import unmapped_codes

    database = runtime.database(Settings.from_env())
    with database.connect() as conn:
        rows = unmapped_codes(conn, institution)
    if as_json:
        click.echo(orjson.dumps([r.__dict__ for r in rows], option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo("没有未映射的本地编码 / no unmapped local codes")
        return
    order = {reason: i for i, reason in enumerate(REASONS)}
    for reason in sorted({r.reason for r in rows}, key=lambda x: order.get(x, len(order)) if x else len(order) + 1):
        group = [r for r in rows if r.reason == reason]
        zh, en = reason_title(reason)
        click.echo(f"\n{zh} / {en} ({reason or '-'}): {len(group)} 个编码 / codes")
        click.echo(f"  {'机构 institution':<24} {'本地编码 local code':<24} {'结果数 results':>14}  system")
        for r in group:
            click.echo(f"  {r.issuer:<24} {r.local_code:<24} {r.results:>14}  {r.local_system or '-'}")


@codes_group.command("remap")
@click.option("--all", "everything", is_flag=True, help="re-evaluate every stored result, not only stale ones")
def codes_remap(everything: bool) -> None:
    """Re-map stored results whose issuer's mapping table changed (also done by `hrx up` at start)."""
    from exchange import runtime
    from exchange.progress import progress_bar
    from exchange.remap import RemapReport, pending, remap

    settings = Settings.from_env()
    database, book = runtime.database(settings), runtime.codebook(settings)
    with progress_bar(pending(database, book, everything=everything), "re-map", "result") as advance:
        shown = 0

        def batch_done(so_far: RemapReport) -> None:
            nonlocal shown
            advance(so_far.examined - shown)
            shown = so_far.examined

        report = remap(database, book, everything=everything, progress=batch_done)
    click.echo(f"examined {report.examined}, re-mapped {report.changed}, newly mapped codes {report.newly_mapped}")
