"""``hrx adapter dicom-scp`` and ``hrx adapter dicom-pull``: the DICOM adapter's commands.

The adapter (pydicom, pynetdicom, the spool) is imported inside the command functions only, so that
``--help`` answers without loading it.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from exchange.cli.doors import allow_list, door_options, metrics_port_option, start_metrics, tls_context
from exchange.config import Settings

if TYPE_CHECKING:
    from adapters.pipeline import ResultPipeline
    from adapters.pseudonymize import Pseudonymizer


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter("use HOST:PORT", param_hint="--pacs")
    return host, int(port)


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise click.BadParameter("use YYYYMMDD", param_hint="--since") from None


def _pipeline(settings: Settings, pseudonymizer: Pseudonymizer | None = None) -> tuple[ResultPipeline, str]:
    """The ingest pipeline the received studies are published through, and the broker's bootstrap address."""
    from adapters.pipeline import ResultPipeline
    from adapters.publish import Publisher
    from exchange import runtime

    # pynetdicom narrates every association at INFO; an operator of the SCP needs its warnings. (Patient data
    # is kept out of every log line by the log guard, whatever the level.)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    pseudonymizer = pseudonymizer or runtime.pseudonymizer(settings)  # refuses to start without the key
    bootstrap = runtime.require_bootstrap(settings)
    publisher = Publisher(bootstrap, client_id="hrx-dicom")
    return ResultPipeline(runtime.codebook(settings), pseudonymizer, publisher), bootstrap


def _stop_event() -> threading.Event:
    """Set by SIGTERM or SIGINT, or once the `hrx up` that started this process is gone."""
    from exchange import runtime

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime.stop_with_parent(stop)
    return stop


_common = [
    click.option("--institution", required=True, help="the issuing institution's id (codes/data/institutions.yaml)"),
    click.option("--host", default="0.0.0.0", show_default=True, help="address the storage SCP listens on"),
    click.option("--stable-seconds", type=click.FloatRange(0), default=30.0, show_default=True,
                 help="a study is complete once no instance arrived for this long"),
    click.option("--max-associations", type=click.IntRange(1, 256), default=8, show_default=True),
    click.option("--max-pdu", type=click.IntRange(4096, 1 << 22), default=65536, show_default=True,
                 help="maximum PDU size we receive (never unlimited)"),
    click.option("--patient-id-is-resident-id", is_flag=True,
                 help="take PatientID as the resident ID even without IssuerOfPatientID NNCHN"),
    click.option("--wado-rs", help="WADO-RS URL of a study for the retrieval pointer; {study} = StudyInstanceUID"),
]


def _options(func):  # type: ignore[no-untyped-def]
    for option in reversed(_common):
        func = option(func)
    return func


@click.command("dicom-scp")
@click.option("--ae", "ae_title", default="HRX", show_default=True, help="our AE title")
@click.option("--port", type=click.IntRange(1, 65535), default=11112, show_default=True)
@click.option("--allow-ae", multiple=True,
              help="a calling AE title allowed to associate, from any address, for --institution (repeat); "
                   "--allow binds titles to addresses too")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path),
              help="spool directory (default: $HRX_VAR_DIR/dicom-spool)")
@click.option("--broker-grace", type=click.FloatRange(0), default=300.0, show_default=True,
              help="answer 0xA700 once the broker has been unreachable this long (0: at once)")
@click.option("--max-pending-studies", type=click.IntRange(1), default=10000, show_default=True,
              help="answer 0xA700 for new studies while this many wait to be published")
@click.option("--retrieve-ae", help="retrieval pointer: the PACS AE title holding the images")
@click.option("--retrieve-host", help="retrieval pointer: the PACS host")
@click.option("--retrieve-port", type=click.IntRange(1, 65535), help="retrieval pointer: the PACS port")
@click.option("--max-associations-per-ae", type=click.IntRange(1, 256), default=4, show_default=True,
              help="concurrent associations one calling AE title may hold (more: rejected, local limit exceeded)")
@click.option("--max-associations-per-address", type=click.IntRange(1, 256), default=4, show_default=True,
              help="concurrent associations one source address may hold (more: rejected, local limit exceeded)")
@click.option("--network-timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="seconds an association may stay idle before it is aborted")
@click.option("--acse-timeout", type=click.FloatRange(1, 600), default=30.0, show_default=True,
              help="ARTIM: seconds to wait for the A-ASSOCIATE-RQ after a connection, and for the transport to "
                   "close after a rejection or release")
@click.option("--dimse-timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="seconds to wait for the rest of a DIMSE message")
@door_options
@metrics_port_option
@_options
def dicom_scp(ae_title: str, port: int, allow_ae: tuple[str, ...], spool: Path | None, broker_grace: float,
              max_pending_studies: int, retrieve_ae: str | None, retrieve_host: str | None,
              retrieve_port: int | None, max_associations_per_ae: int, max_associations_per_address: int,
              network_timeout: float, acse_timeout: float, dimse_timeout: float, institution: str, host: str,
              stable_seconds: float, max_associations: int, max_pdu: int, patient_id_is_resident_id: bool,
              wado_rs: str | None, allow_file: Path | None, tls_cert: Path | None, tls_key: Path | None,
              tls_ca: Path | None, metrics_port: int | None) -> None:
    """C-ECHO/C-STORE SCP: spool instances durably, publish each study once it is stable.

    The door: --allow (and --allow-ae) name the calling AE titles bound to --institution; --tls-cert serves
    DICOM over TLS (its handshake bounded by --acse-timeout), --tls-ca requires client certificates.
    """
    from adapters.dicom.scp import DicomReceiver, Retrieval, ScpConfig
    from adapters.dicom.spool import Spool

    from exchange import runtime

    settings = Settings.from_env()
    allow = allow_list(allow_file, runtime.codebook(settings))
    tls = tls_context(tls_cert, tls_key, tls_ca, acse_timeout)
    pipeline, bootstrap = _pipeline(settings)
    config = ScpConfig(ae_title=ae_title, host=host, port=port, allow_ae=allow_ae, allow=allow, ssl_context=tls,
                       max_associations=max_associations, max_associations_per_ae=max_associations_per_ae,
                       max_associations_per_address=max_associations_per_address, max_pdu=max_pdu,
                       stable_seconds=stable_seconds, broker_grace=broker_grace,
                       patient_id_is_resident_id=patient_id_is_resident_id, network_timeout=network_timeout,
                       acse_timeout=acse_timeout, dimse_timeout=dimse_timeout)
    store = Spool(spool or settings.var_dir / "dicom-spool", max_pending_studies=max_pending_studies)
    retrieval = Retrieval(retrieve_ae, retrieve_host, retrieve_port, wado_rs)
    stop = _stop_event()
    receiver = DicomReceiver(config, store, pipeline, institution, retrieval, bootstrap).start()
    start_metrics(metrics_port)
    try:
        while not stop.wait(60):
            click.echo(f"dicom-scp: {receiver.handler.stats.stored} stored, {receiver.handler.stats.duplicates} "
                       f"duplicate(s), {receiver.handler.stats.refused} refused, {receiver.handler.stats.failed} "
                       f"failed; {receiver.door.rejected} association(s) from callers not on the allow-list, "
                       f"{receiver.limits.rejected} over a per-caller limit; spool "
                       f"{store.counts()}", err=True)
    finally:
        receiver.stop()
        pipeline.publisher.close()
        store.close()


class _PullCommand(click.Command):
    """``dicom-pull``, whose --status needs only the PACS and the spool: --institution is not required then."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        relaxed = [p for p in self.params if p.required and p.name == "institution"] if "--status" in args else []
        for param in relaxed:
            param.required = False
        try:
            return super().parse_args(ctx, args)
        finally:
            for param in relaxed:
                param.required = True


def _first_day(since: str | None) -> date:
    """The first StudyDate to pull when no watermark is stored: ``--since``, else today's Beijing date."""
    from codes.calendar import beijing_now

    first = _since(since)
    return first.date() if first else beijing_now().date()


class _MoveProgress:
    """A tqdm bar of the studies moved, on a terminal only (a log or a pipe gets the summary lines)."""

    def __init__(self) -> None:
        self._bar: Any = None

    def __call__(self, moved: int, total: int) -> None:
        if total == 0 or not sys.stderr.isatty():
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc="C-MOVE", unit="study", file=sys.stderr, leave=False)
        self._bar.update(moved - self._bar.n)
        if moved >= total:
            self._bar.close()
            self._bar = None


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    widths = [max([len(title), *(len(str(row[key])) for row in rows)]) for key, title in columns]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return ["  " + line.format(*(title for _, title in columns)).rstrip()] + [
        "  " + line.format(*(str(row[key]) for key, _ in columns)).rstrip() for row in rows]


def _status_lines(report: dict[str, Any], lookback_days: int) -> list[str]:
    from codes.calendar import beijing_minute

    for row in report["retry"]:
        row["next_try"] = beijing_minute(datetime.fromisoformat(row["next_try"]))
    for row in report["given_up"]:
        row["given_up_at"] = beijing_minute(datetime.fromisoformat(row["given_up_at"]))
    out = [f"{report['pull']}: watermark StudyDate >= {report['watermark']} (queried from "
           f"{report['queried_from']} with a {lookback_days}-day look-back)",
           f"done: {len(report['done'])} study(ies) within the look-back"]
    if report["done"]:
        out += _table(report["done"], [("study_uid", "STUDY INSTANCE UID"), ("key_date", "DATE"), ("by", "BY")])
    out.append(f"pending retries: {len(report['retry'])}")
    if report["retry"]:
        out += _table(report["retry"], [("study_uid", "STUDY INSTANCE UID"), ("key_date", "DATE"),
                                        ("attempts", "ATTEMPTS"), ("next_try", "NEXT TRY (BEIJING)"),
                                        ("reason", "REASON")])
    out.append(f"given up: {len(report['given_up'])}")
    if report["given_up"]:
        out += _table(report["given_up"], [("study_uid", "STUDY INSTANCE UID"), ("key_date", "DATE"),
                                           ("attempts", "ATTEMPTS"), ("given_up_at", "GIVEN UP (BEIJING)"),
                                           ("reason", "REASON")])
    return out


@click.command("dicom-pull", cls=_PullCommand)
@click.option("--pacs", required=True, help="the PACS's HOST:PORT")
@click.option("--pacs-ae", required=True, help="the PACS's AE title")
@click.option("--ae", "ae_title", default="HRXPULL", show_default=True,
              help="our AE title (the C-MOVE destination the PACS knows)")
@click.option("--port", type=click.IntRange(1, 65535), default=11113, show_default=True,
              help="port of our storage SCP receiving the C-MOVE")
@click.option("--since", help="YYYYMMDD: first StudyDate to pull when no watermark is stored yet "
                              "[default: today in Beijing]")
@click.option("--lookback-days", type=click.IntRange(0, 365), default=1, show_default=True,
              help="also query this many days before the watermark (studies that reach the PACS late)")
@click.option("--undated/--no-undated", default=True, show_default=True,
              help="also find studies without StudyDate, by SeriesDate within the look-back")
@click.option("--retry-attempts", type=click.IntRange(1, 100), default=8, show_default=True,
              help="attempts per study (the first included) before it is given up")
@click.option("--retry-delay", type=click.FloatRange(0), default=600.0, show_default=True,
              help="seconds from a study's first failed attempt to its second; doubled after each attempt")
@click.option("--retry-max-delay", type=click.FloatRange(0), default=43200.0, show_default=True,
              help="longest wait in seconds between two attempts of a study")
@click.option("--once", is_flag=True, help="pull once, publish, exit (0 ok, 1 PACS problems, 2 broker down)")
@click.option("--interval", type=click.FloatRange(1), default=300.0, show_default=True,
              help="seconds between pulls when not --once")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path),
              help="spool directory with the watermark (default: $HRX_VAR_DIR/dicom-pull-spool)")
@click.option("--status", "show_status", is_flag=True,
              help="print the stored state (watermark, done, retries, given up) and exit; pulls nothing")
@click.option("--json", "as_json", is_flag=True, help="with --status: print it as JSON")
@_options
def dicom_pull(pacs: str, pacs_ae: str, ae_title: str, port: int, since: str | None, lookback_days: int,
               undated: bool, retry_attempts: int, retry_delay: float, retry_max_delay: float, once: bool,
               interval: float, spool: Path | None, show_status: bool, as_json: bool, institution: str | None,
               host: str, stable_seconds: float, max_associations: int, max_pdu: int,
               patient_id_is_resident_id: bool, wado_rs: str | None) -> None:
    """C-FIND new studies on a PACS from a stored watermark, C-MOVE them to ourselves, publish them.

    Studies without StudyDate are found by SeriesDate; a study not retrieved completely is retried with a
    back-off, then given up. --status lists the watermark, the studies done, to retry and given up.
    """
    pacs_host, pacs_port = _host_port(pacs)
    settings = Settings.from_env()
    spool_dir = spool or settings.var_dir / "dicom-pull-spool"
    if show_status:
        _print_status(spool_dir, pacs_ae, pacs_host, pacs_port, lookback_days, as_json)
        return
    if as_json:
        raise click.BadParameter("only with --status", param_hint="--json")
    if retry_max_delay < retry_delay:
        raise click.BadParameter("must not be shorter than --retry-delay", param_hint="--retry-max-delay")
    first = _first_day(since)
    assert institution is not None  # required unless --status

    from adapters.dicom.pull import Puller, PullError
    from adapters.dicom.pull_state import RetryPolicy
    from adapters.dicom.scp import DicomReceiver, Retrieval, ScpConfig
    from adapters.dicom.spool import Spool

    from exchange import runtime

    pseudonymizer = runtime.pseudonymizer(settings)  # refuse before a spool is made where the key is missing
    store = Spool(spool_dir)
    pipeline, bootstrap = _pipeline(settings, pseudonymizer)
    config = ScpConfig(ae_title=ae_title, host=host, port=port, allow_ae=(pacs_ae,),
                       max_associations=max_associations, max_pdu=max_pdu, stable_seconds=stable_seconds,
                       patient_id_is_resident_id=patient_id_is_resident_id)
    receiver = DicomReceiver(config, store, pipeline, institution, Retrieval(pacs_ae, pacs_host, pacs_port, wado_rs),
                             bootstrap)
    puller = Puller(receiver, pacs_host, pacs_port, pacs_ae, first, lookback_days,
                    retry=RetryPolicy(retry_attempts, retry_delay, retry_max_delay), find_undated=undated)
    if store.get_state(puller.state_name) is None:
        click.echo(f"no watermark stored yet: pulling from StudyDate {first:%Y%m%d}")
    receiver.start(assemble=not once)  # after the Puller: it wraps the storage handler
    stop = _stop_event()
    code = 0
    try:
        while True:
            try:
                summary = puller.run_once(_MoveProgress())
                for line in summary.lines():
                    click.echo(line)
                code = 1 if summary.pacs_problems else 0
            except PullError as exc:
                click.echo(f"dicom-pull: {exc}", err=True)
                code = 1
            if once:
                receiver.assembler.stable_seconds = 0
                receiver.assembler.assemble_once(now=time.time() + 1e6)  # every study, retry times ignored
                counts = store.counts()
                click.echo(f"published {receiver.assembler.stats.published} study(ies); spool {counts}")
                if counts["pending"]:
                    click.echo(f"{counts['pending']} study(ies) wait for the broker "
                               f"({receiver.assembler.stats.last_error}); they are published by the next run",
                               err=True)
                    code = 2
                break
            if stop.wait(interval):
                break
    finally:
        receiver.stop()
        pipeline.publisher.close()
        store.close()
    sys.exit(code)


def _print_status(spool_dir: Path, pacs_ae: str, pacs_host: str, pacs_port: int, lookback_days: int,
                  as_json: bool) -> None:
    import orjson

    from adapters.dicom.pull_state import PullState, describe, state_name
    from adapters.dicom.spool import read_state

    name = state_name(pacs_ae, pacs_host, pacs_port)
    stored = read_state(spool_dir, name)
    if stored is None:
        if as_json:
            click.echo(orjson.dumps({"pull": name, "watermark": None}).decode())
        else:
            click.echo(f"{name}: nothing pulled yet (no state in {spool_dir})")
        return
    report = describe(name, PullState.from_json(stored), lookback_days)
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        for line in _status_lines(report, lookback_days):
            click.echo(line)
