"""Scenario ``spool-full``: the file system of the DICOM adapter's spool fills up while a modality sends.

Rule under test (docs/rules.md, "Delivery"; adapters/dicom/scp.py): C-STORE answers 0x0000 only once the
instance's record is committed to the spool (SQLite WAL, ``synchronous=FULL``), and 0xA700 (out of resources)
when the spool cannot commit — so the modality keeps the images and resends them; once space is freed, the
same SCP process takes the resends.

Run (as root): a tmpfs of ``FS_MIB`` MiB is mounted and holds the spool. The spool is created there and its
free pages are used up by one ballast row (a spool that has been running a while); ``hrx adapter dicom-scp``
starts on it, publishing to an embedded broker, and a ballast file fills what is left of the file system.
Then studies of ``PER_STUDY`` instances are sent with dcmtk's ``storescu`` until the SCP refuses
``REFUSED_BATCHES`` whole associations in a row; the ballast file is deleted and every instance not answered
0x0000 is sent again. Finally the SCP is killed with SIGKILL and the spool read back from the tmpfs.

Oracle: the file system did fill (0xA700 answered); no answer other than 0x0000 or 0xA700 (no 0xC000
"internal error"); every instance answered 0x0000 — before or after the space was freed — is in the spool
after the kill (no 0x0000 for an instance that was not committed: a false ACK); every resend after the space
was freed is answered 0x0000; every study is published to the broker; the SCP never exits by itself.

What is checked is the commit (a write the file system refused is never answered 0x0000). That the commit
was also fsynced is SQLite's ``synchronous=FULL``; a tmpfs has no device to flush, so a power cut is not
simulated here.
"""
from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pydicom

from adapters.dicom.spool import Spool
from exchange.broker import free_port

from chaos import data
from chaos.doors import out_of_resources, storescu
from chaos.figures import Figures
from chaos.processes import RestartableBroker, exchange_env, run_directory, spawn, wait_listening, wait_until

FS_MIB = 16
PER_STUDY = 20
REFUSED_BATCHES = 2
MAX_INSTANCES = 8000
SHORT_MAX_INSTANCES = 4000
PUBLISH_TIMEOUT = 120.0


def run(short: bool = False) -> list[Figures]:
    with run_directory("spool-full") as tmp:
        return [fill_spool(tmp, SHORT_MAX_INSTANCES if short else MAX_INSTANCES)]


def mount_tmpfs(directory: Path, mib: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs", str(directory)], check=True,
                   capture_output=True, text=True)


def unmount(directory: Path) -> None:
    subprocess.run(["umount", "-l", str(directory)], check=False, capture_output=True)


def use_up_free_pages(spool: Path) -> tuple[Spool, int]:
    """Create the spool (as the SCP does) and fill its free pages with one ballast row: a spool that has been
    running a while. Returns the open spool and the ballast's size.

    The spool grows its write-ahead log to 4 MiB when it opens and leaves as many pages free in the database
    file (adapters/dicom/spool.py, ``WAL_PREALLOCATE``): without the ballast, thousands of instances would go
    into them before the file system is touched at all. Keep the returned spool open until the SCP has opened
    its own: the log is removed with the last connection, and a new one is preallocated again (freeing pages).
    """
    opened = Spool(spool)
    db = sqlite3.connect(spool / "index.db", isolation_level=None, timeout=30)
    try:
        free, page = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("freelist_count", "page_size"))
        ballast = max(0, free - 8) * (page - 96)  # a little less than a page's worth per overflow page
        db.execute("INSERT INTO state VALUES ('chaos-ballast', zeroblob(?))", (ballast,))
        db.execute("PRAGMA wal_checkpoint(RESTART)")
    finally:
        db.close()
    return opened, ballast


def fill_file_system(directory: Path) -> int:
    """Write zeros to ``directory/ballast`` until the file system is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with open(directory / "ballast", "wb", buffering=0) as ballast:
        while True:
            try:
                written += ballast.write(chunk)
            except OSError:
                break
        try:
            while written % 4096 == 0:  # the last partial blocks
                written += ballast.write(b"\0" * 512)
        except OSError:
            pass
    return written


def spooled(spool: Path) -> set[str]:
    db = sqlite3.connect(f"file:{spool / 'index.db'}?mode=ro", uri=True, timeout=30)
    try:
        return {row[0] for row in db.execute("SELECT sop_uid FROM instances")}
    finally:
        db.close()


def pending_studies(spool: Path) -> int:
    db = sqlite3.connect(f"file:{spool / 'index.db'}?mode=ro", uri=True, timeout=30)
    try:
        return int(db.execute("SELECT count(*) FROM studies WHERE dirty = 1 AND rejected = 0").fetchone()[0])
    finally:
        db.close()


def fill_spool(root: Path, max_instances: int, tag: int = 4) -> Figures:
    figures = Figures("spool-full", f"tmpfs {FS_MIB} MiB", tries_of="C-STOREs", lag_applies=False)
    mount = root / "spoolfs"
    try:
        mount_tmpfs(mount, FS_MIB)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        figures.failures.append(f"cannot mount a tmpfs for the spool (this scenario needs root): {detail}")
        return figures
    spool = mount / "spool"
    scp = None
    try:
        with RestartableBroker(root / "tansu.log") as broker:
            holder, figures.extra["spool_ballast_row_bytes"] = use_up_free_pages(spool)
            port = free_port()
            scp = spawn("dicom", ["adapter", "dicom-scp", "--institution", data.DICOM_INSTITUTION, "--host",
                                  "127.0.0.1", "--port", str(port), "--spool", str(spool), "--stable-seconds", "1"],
                        exchange_env(bootstrap=broker.bootstrap, var_dir=root), root)
            wait_listening(scp, port, 90)
            holder.close()
            figures.extra["ballast_file_bytes"] = fill_file_system(mount)
            statuses: dict[str, int] = {}
            answered: dict[Path, str] = {}
            refused_in_a_row = 0
            n = 0
            while refused_in_a_row < REFUSED_BATCHES and len(answered) < max_instances and scp.alive():
                study = data.dicom_study(root / "sent", n, tag, instances=PER_STUDY)
                n += 1
                answers, error = storescu(port, study.files)
                figures.tries += len(study.files)
                if error is not None:
                    figures.hangs += error == "hang"
                    figures.failures.append(f"storescu: {error}")
                    break
                for path, answer in zip(study.files, answers, strict=True):
                    answered[path] = answer
                    statuses[answer] = statuses.get(answer, 0) + 1
                refused_in_a_row = refused_in_a_row + 1 if all(a != "Success" for a in answers) else 0
            until_full = sum(1 for a in answered.values() if a == "Success")
            refused = [p for p, a in answered.items() if a != "Success"]
            (mount / "ballast").unlink()
            resend_answers, resend_error = storescu(port, refused) if refused else ([], None)
            figures.tries += len(refused)
            figures.expect(resend_error is None, f"storescu after freeing space: {resend_error}")
            resent_ok = [p for p, a in zip(refused, resend_answers, strict=False) if a == "Success"]
            freed = time.monotonic()
            published = wait_until(lambda: pending_studies(spool) == 0 or not scp.alive(), PUBLISH_TIMEOUT, 0.5)
            figures.extra["all_published_after_freeing_s"] = round(time.monotonic() - freed, 1)
            if scp.crashed:
                figures.crashes += 1
                figures.failures.append(f"the SCP exited by itself: {scp.tail(800)!r}")
            scp.kill9()
            in_spool = spooled(spool)
    finally:
        if scp is not None and scp.alive():
            scp.kill9()
        unmount(mount)
    acknowledged = [p for p, a in answered.items() if a == "Success"] + resent_ok
    uid = {p: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in answered}
    not_committed = [p for p in acknowledged if uid[p] not in in_spool]
    other = {a: n for a, n in statuses.items() if a != "Success" and not out_of_resources(a)}
    figures.acknowledged = len(acknowledged)
    figures.stored = len(acknowledged) - len(not_committed)
    figures.lost_not_allowed = figures.false_acks = len(not_committed)
    figures.refusals = sum(n for a, n in statuses.items() if out_of_resources(a))
    figures.extra.update({"instances_before_full": until_full, "refused_then_resent": len(refused),
                          "resends_stored": len(resent_ok), "statuses": statuses,
                          "studies_published": bool(published), "refused_but_spooled":
                          sum(1 for p in refused if uid[p] in in_spool and p not in resent_ok)})
    figures.expect(figures.refusals > 0, f"the file system never filled ({len(answered)} instances sent)")
    figures.expect(not other, f"answers other than 0x0000 and 0xA700: {other}")
    figures.expect(not not_committed, f"{len(not_committed)} instance(s) answered 0x0000 but not in the spool")
    figures.expect(len(resent_ok) == len(refused), f"{len(refused) - len(resent_ok)} of {len(refused)} resends "
                                                    "not stored after space was freed")
    figures.expect(bool(published), f"studies still unpublished {PUBLISH_TIMEOUT:.0f} s after space was freed")
    return figures
