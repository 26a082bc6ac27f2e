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
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

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
@click.option("--allow-ae", multiple=True, help="calling AE titles allowed to associate (repeat; default: any)")
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
@_options
def dicom_scp(ae_title: str, port: int, allow_ae: tuple[str, ...], spool: Path | None, broker_grace: float,
              max_pending_studies: int, retrieve_ae: str | None, retrieve_host: str | None,
              retrieve_port: int | None, max_associations_per_ae: int, max_associations_per_address: int,
              network_timeout: float, acse_timeout: float, dimse_timeout: float, institution: str, host: str,
              stable_seconds: float, max_associations: int, max_pdu: int, patient_id_is_resident_id: bool,
              wado_rs: str | None) -> None:
    """C-ECHO/C-STORE SCP: spool instances durably, publish each study once it is stable."""
    from adapters.dicom.scp import DicomReceiver, Retrieval, ScpConfig
    from adapters.dicom.spool import Spool

    settings = Settings.from_env()
    pipeline, bootstrap = _pipeline(settings)
    config = ScpConfig(ae_title=ae_title, host=host, port=port, allow_ae=allow_ae,
                       max_associations=max_associations, max_associations_per_ae=max_associations_per_ae,
                       max_associations_per_address=max_associations_per_address, max_pdu=max_pdu,
                       stable_seconds=stable_seconds, broker_grace=broker_grace,
                       patient_id_is_resident_id=patient_id_is_resident_id, network_timeout=network_timeout,
                       acse_timeout=acse_timeout, dimse_timeout=dimse_timeout)
    store = Spool(spool or settings.var_dir / "dicom-spool", max_pending_studies=max_pending_studies)
    retrieval = Retrieval(retrieve_ae, retrieve_host, retrieve_port, wado_rs)
    stop = _stop_event()
    receiver = DicomReceiver(config, store, pipeline, institution, retrieval, bootstrap).start()
    try:
        while not stop.wait(60):
            click.echo(f"dicom-scp: {receiver.handler.stats.stored} stored, {receiver.handler.stats.duplicates} "
                       f"duplicate(s), {receiver.handler.stats.refused} refused, {receiver.handler.stats.failed} "
                       f"failed; {receiver.limits.rejected} association(s) over a per-caller limit; spool "
                       f"{store.counts()}", err=True)
    finally:
        receiver.stop()
        pipeline.publisher.close()
        store.close()


@click.command("dicom-pull")
@click.option("--pacs", required=True, help="the PACS's HOST:PORT")
@click.option("--pacs-ae", required=True, help="the PACS's AE title")
@click.option("--ae", "ae_title", default="HRXPULL", show_default=True,
              help="our AE title (the C-MOVE destination the PACS knows)")
@click.option("--port", type=click.IntRange(1, 65535), default=11113, show_default=True,
              help="port of our storage SCP receiving the C-MOVE")
@click.option("--since", help="YYYYMMDD: first StudyDate to pull when no watermark is stored yet")
@click.option("--lookback-days", type=click.IntRange(0, 365), default=1, show_default=True,
              help="also query this many days before the watermark (studies that reach the PACS late)")
@click.option("--once", is_flag=True, help="pull once, publish, exit (0 ok, 1 PACS problems, 2 broker down)")
@click.option("--interval", type=click.FloatRange(1), default=300.0, show_default=True,
              help="seconds between pulls when not --once")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path),
              help="spool directory with the watermark (default: $HRX_VAR_DIR/dicom-pull-spool)")
@_options
def dicom_pull(pacs: str, pacs_ae: str, ae_title: str, port: int, since: str | None, lookback_days: int,
               once: bool, interval: float,
               spool: Path | None, institution: str, host: str, stable_seconds: float, max_associations: int,
               max_pdu: int, patient_id_is_resident_id: bool, wado_rs: str | None) -> None:
    """C-FIND new studies on a PACS from a stored watermark, C-MOVE them to ourselves, publish them."""
    from adapters.dicom.pull import Puller, PullError
    from adapters.dicom.scp import DicomReceiver, Retrieval, ScpConfig
    from adapters.dicom.spool import Spool

    from exchange import runtime

    pacs_host, pacs_port = _host_port(pacs)
    settings = Settings.from_env()
    pseudonymizer = runtime.pseudonymizer(settings)  # refuse before a spool is made where the key is missing
    store = Spool(spool or settings.var_dir / "dicom-pull-spool")
    first = _since(since)
    if first is None and store.get_state(f"pull:{pacs_ae}@{pacs_host}:{pacs_port}") is None:
        raise click.BadParameter("no watermark is stored yet: give the first StudyDate", param_hint="--since")
    pipeline, bootstrap = _pipeline(settings, pseudonymizer)
    config = ScpConfig(ae_title=ae_title, host=host, port=port, allow_ae=(pacs_ae,),
                       max_associations=max_associations, max_pdu=max_pdu, stable_seconds=stable_seconds,
                       patient_id_is_resident_id=patient_id_is_resident_id)
    receiver = DicomReceiver(config, store, pipeline, institution, Retrieval(pacs_ae, pacs_host, pacs_port, wado_rs),
                             bootstrap).start(assemble=not once)
    puller = Puller(receiver, pacs_host, pacs_port, pacs_ae, (first or datetime.now()).date(),
                    lookback_days)
    stop = _stop_event()
    code = 0
    try:
        while True:
            try:
                summary = puller.run_once()
                for line in summary.lines():
                    click.echo(line)
                code = 1 if summary.failed else 0
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
