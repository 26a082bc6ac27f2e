"""4. DICOM receive: instances/s from dcmtk ``storescu`` (one association) into our SCP, against Orthanc's own
C-STORE receiver (default configuration) and dcmtk's ``storescp`` writing plain files, in the same run, on the
same files.

Data: N small CT instances (N = 300, quick 100) made from pydicom's bundled ``CT_small.dcm`` (128×128, 16 bit,
~39 KB), each with a new SOP Instance UID, in 5 studies (consecutive in the send order) of 5 patients with a
valid resident ID and IssuerOfPatientID ``NNCHN``; plus 3 warm-up instances in a separate study, sent to each
fresh target just before the timed send (so process start-up and first-use costs are not timed).

Sender: ``storescu -aet BENCH -aec <AE> 127.0.0.1 <port> <N files>`` with ``TCP_NODELAY=1`` in its environment
(one association, dcmtk's default presentation contexts); instances/s = N / wall time of that storescu process.
Every target is a *fresh* process with empty storage for every run (a resend would only hit the duplicate
paths), and after the run the stored count is checked: our spool's ``instances`` rows (read after the SCP
exited), Orthanc's ``GET /statistics`` CountInstances, the files in storescp's directory. A target that did
not store all N + 3 instances is reported as failed, not fast.

Targets:

- ours: ``python -m exchange.cli adapter dicom-scp --institution bj-xicheng-001 --host 127.0.0.1 --port P
  --spool <tmp> --stable-seconds 1`` as a child process, publishing to an embedded tansu broker
  (HRX_KAFKA_BOOTSTRAP, HRX_VAR_DIR, HRX_PSEUDONYM_KEY). 0x0000 is answered only after the instance's record is
  committed to the spool (SQLite WAL, synchronous=FULL, fsync on ext4 here). ``--stable-seconds 1`` (default
  30) makes the assembler publish the first studies *during* the timed send (the conservative case); after the
  send the benchmark waits until every study is published, as a check, untimed.
- orthanc: built-in defaults (its SQLite index, file storage with SyncStorageArea = fsync) except
  DicomAet / DicomPort / HttpPort / StorageDirectory / IndexDirectory and BENCH as a known modality, started
  *without* TCP_NODELAY in its environment, as the packaged service runs it. Orthanc's DICOM side is dcmtk,
  which then leaves Nagle on at Orthanc's end: this is the issue's "Orthanc about 20/s".
- orthanc_nodelay: the same Orthanc with ``TCP_NODELAY=1`` in its environment (its real receive cost).
- storescp: ``storescp -aet STORESCP -od <tmp> <port>`` with ``TCP_NODELAY=1`` in its environment (defaults
  otherwise: no --fork, no fsync, no index): the practical ceiling.
- pynetdicom_bare (information): our server class (its socket options and pynetdicom tuning: no standard
  logging handlers, cheap per-association context copies, a 0.1 ms DUL loop delay, the reactor clock —
  adapters/dicom/scp.py, adapters/dicom/pynetdicom_compat.py)
  and presentation contexts with a handler that answers 0x0000 without reading the data set, in a thread
  of this process: the floor of a pynetdicom SCP set up like ours.

Measured here (dcmtk 3.6.7, Debian): when either end leaves Nagle on, a dcmtk pair runs at ~20/s (storescp
22/s, Orthanc 20/s); both ends ~11/s. Our SCP sets TCP_NODELAY and TCP_QUICKACK itself, so a sender with
Nagle on barely slows it (the extra ``TCP_NODELAY=0`` row). Each target runs R times (R = 2, quick 1) with
the target order alternated between runs; the best run of each target gives the ratio, every run is listed.
The goal "≥ 5× Orthanc" is reported against both Orthanc variants.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Outcome, ratio, say
from bench.data import PSEUDONYM_KEY

INSTITUTION = "bj-xicheng-001"
STUDIES = 5
WARMUP = 3
OURS_AE, ORTHANC_AE, STORESCP_AE, CALLING_AE = "HRX", "ORTHANC", "STORESCP", "BENCH"
STABLE_SECONDS = 1.0


def ct_small() -> Path:
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


def make_instances(directory: Path, n: int, studies: int, tag: int) -> list[Path]:
    """``n`` CT instances in ``studies`` studies (consecutive in the returned order), each study its own patient."""
    import pydicom
    from pydicom.uid import generate_uid

    from schemas.resident_id import make_resident_id

    directory.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(ct_small())
    if "TimezoneOffsetFromUTC" in ds:
        del ds.TimezoneOffsetFromUTC
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.BodyPartExamined = "CHEST"
    ds.StudyDescription = "CT 胸部"
    files: list[Path] = []
    per_study = -(-n // studies)
    for i in range(n):
        study, k = divmod(i, per_study)
        if k == 0:
            resident_id = make_resident_id(f"1101051980{tag:02d}{study + 1:02d}{study:03d}")
            ds.PatientID = resident_id
            ds.IssuerOfPatientID = "NNCHN"
            ds.PatientBirthDate = resident_id[6:14]
            ds.PatientSex = "F"
            ds.AccessionNumber = f"BENCH-{tag}-{study + 1}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        path = directory / f"ct-{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


# -- sending ------------------------------------------------------------------------------------------------

def storescu(port: int, called: str, files: list[Path], nodelay: bool = True,
             timeout: float = 900) -> tuple[float, int, str]:
    """One storescu process, one association: (wall seconds, exit code, its output)."""
    env = dict(os.environ, TCP_NODELAY="1" if nodelay else "0")
    t0 = time.perf_counter()
    proc = subprocess.run(["storescu", "-aet", CALLING_AE, "-aec", called, "127.0.0.1", str(port),
                           *map(str, files)], env=env, capture_output=True, timeout=timeout, check=False)
    seconds = time.perf_counter() - t0
    return seconds, proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")


def wait_echo(port: int, called: str, alive: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{called} exited before answering C-ECHO")
        found = subprocess.run(["echoscu", "-aet", CALLING_AE, "-aec", called, "127.0.0.1", str(port)],
                               capture_output=True, timeout=30, check=False, env=dict(os.environ, TCP_NODELAY="1"))
        if found.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{called} on port {port} did not answer C-ECHO within {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# -- targets: each a fresh process with empty storage; yields (port, AE, count-after-the-run) ----------------

@dataclass
class Target:
    port: int
    ae: str
    count: Callable[[], int]
    extra: Callable[[], dict[str, Any]] = dict


@contextmanager
def ours(root: Path, bootstrap: str) -> Iterator[Target]:
    from exchange.broker import free_port

    port = free_port()
    spool = root / "spool"
    env = dict(os.environ, HRX_KAFKA_BOOTSTRAP=bootstrap, HRX_VAR_DIR=str(root), HRX_PSEUDONYM_KEY=PSEUDONYM_KEY)
    log = open(root / "dicom-scp.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "exchange.cli", "adapter", "dicom-scp", "--institution",
                             INSTITUTION, "--ae", OURS_AE, "--host", "127.0.0.1", "--port", str(port), "--spool",
                             str(spool), "--stable-seconds", str(STABLE_SECONDS)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stopped = False

    def query(sql: str) -> Any:
        db = sqlite3.connect(f"file:{spool / 'index.db'}?mode=ro", uri=True, timeout=30)
        try:
            return db.execute(sql).fetchone()
        finally:
            db.close()

    def count() -> int:
        nonlocal stopped
        _stop(proc)  # counted once the SCP has exited: only what reached the disk counts
        stopped = True
        return int(query("SELECT count(*) FROM instances")[0])

    def published(timeout: float = 60) -> dict[str, Any]:
        """Untimed check: wait until the assembler published every study (before count() stops the SCP)."""
        t0 = time.perf_counter()
        while True:
            studies, waiting, rejected = query("SELECT count(*), coalesce(sum(dirty = 1 AND rejected = 0), 0), "
                                               "coalesce(sum(rejected), 0) FROM studies")
            if (studies and not waiting) or time.perf_counter() - t0 > timeout or proc.poll() is not None:
                return {"studies": studies, "unpublished": waiting, "rejected": rejected,
                        "seconds_until_all_published_after_send": round(time.perf_counter() - t0, 2)}
            time.sleep(0.2)

    try:
        wait_echo(port, OURS_AE, lambda: proc.poll() is None)
        yield Target(port, OURS_AE, count, published)
    except Exception:
        say(_tail(root / "dicom-scp.log"))
        raise
    finally:
        if not stopped:
            _stop(proc)
        log.close()


@contextmanager
def orthanc(root: Path, tcp_nodelay: bool) -> Iterator[Target]:
    """Orthanc with built-in defaults; ``tcp_nodelay``: TCP_NODELAY=1 in its environment, else none at all."""
    from exchange.broker import free_port

    port, http = free_port(), free_port()
    conf = {"DicomAet": ORTHANC_AE, "DicomPort": port, "HttpPort": http,
            "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
            "DicomModalities": {"bench": [CALLING_AE, "127.0.0.1", 104]}}
    (root / "conf.json").write_text(json.dumps(conf))
    log = open(root / "orthanc.log", "wb")  # noqa: SIM115
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if tcp_nodelay:
        env["TCP_NODELAY"] = "1"
    proc = subprocess.Popen(["Orthanc", str(root / "conf.json")], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)

    def rest(path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}{path}", timeout=30) as resp:
            return json.loads(resp.read())

    def count() -> int:
        return int(rest("/statistics")["CountInstances"])

    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({proc.returncode}): {_tail(root / 'orthanc.log')}")
            try:
                rest("/system")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("Orthanc's REST API did not answer within 60 s") from None
                time.sleep(0.2)
        wait_echo(port, ORTHANC_AE, lambda: proc.poll() is None)
        yield Target(port, ORTHANC_AE, count)
    finally:
        _stop(proc)
        log.close()


@contextmanager
def storescp(root: Path) -> Iterator[Target]:
    from exchange.broker import free_port

    port = free_port()
    out_dir = root / "out"
    out_dir.mkdir()
    log = open(root / "storescp.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["storescp", "-aet", STORESCP_AE, "-od", str(out_dir), str(port)],
                            env=dict(os.environ, TCP_NODELAY="1"), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_echo(port, STORESCP_AE, lambda: proc.poll() is None)
        yield Target(port, STORESCP_AE, lambda: sum(1 for p in out_dir.iterdir() if p.is_file()))
    finally:
        _stop(proc)
        log.close()


@contextmanager
def pynetdicom_bare(root: Path) -> Iterator[Target]:
    """A floor for a pynetdicom SCP set up like ours: our server class (with its pynetdicom tuning) and contexts,
    a handler that answers 0x0000 unread.

    Runs in a thread of the benchmark process (which is otherwise idle while storescu sends).
    """
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt

    from adapters.dicom.pynetdicom_compat import start_server
    from adapters.dicom.scp import DEFAULT_MAX_PDU, NoDelayAssociationServer
    from exchange.broker import free_port

    received = [0]

    def handler(event: Any) -> int:
        received[0] += 1
        return 0x0000

    ae = AE(ae_title=OURS_AE)
    ae.maximum_pdu_size = DEFAULT_MAX_PDU
    contexts = [*StoragePresentationContexts]
    for cx in contexts:
        cx.transfer_syntax = list(ALL_TRANSFER_SYNTAXES)
    ae.supported_contexts = contexts
    port = free_port()
    server = start_server(ae, ("127.0.0.1", port), [(evt.EVT_C_STORE, handler)], NoDelayAssociationServer)
    try:
        yield Target(port, OURS_AE, lambda: received[0])
    finally:
        server.shutdown()


# -- one run -------------------------------------------------------------------------------------------------

def one_run(name: str, target_cm: Any, files: list[Path], warm: list[Path], nodelay: bool = True) -> dict[str, Any]:
    with target_cm as target:
        _w_seconds, w_rc, w_out = storescu(target.port, target.ae, warm)
        if w_rc != 0:
            raise RuntimeError(f"{name}: warm-up storescu exited {w_rc}: {w_out[-800:]}")
        seconds, rc, output = storescu(target.port, target.ae, files, nodelay=nodelay)
        extra = target.extra()
        stored = target.count()
    expected = len(files) + len(warm)
    complaints = [line for line in output.splitlines() if line.startswith(("E:", "W:", "F:"))]
    ok = rc == 0 and stored == expected
    row: dict[str, Any] = {"target": name, "tcp_nodelay_sender": int(nodelay), "seconds": round(seconds, 3),
                           "instances_per_s": round(len(files) / seconds, 1), "storescu_exit": rc,
                           "stored": stored, "expected_stored": expected, "ok": ok, **extra}
    if complaints:
        row["storescu_messages"] = complaints[:5]
    say(f"dicom: {name:15s} sender TCP_NODELAY={int(nodelay)} {len(files)} instances in {seconds:7.2f} s = "
        f"{len(files) / seconds:7.1f}/s; stored {stored}/{expected}{'' if ok else '  FAILED'}"
        + (f" {extra}" if extra else ""))
    return row


def _tool_version(args: list[str]) -> str | None:
    try:
        found = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in (found.stdout + found.stderr).splitlines() if line.strip()]
    return lines[0].strip().strip("$").strip() if lines else None


def run(quick: bool = False) -> Outcome:
    from importlib import metadata

    from exchange.broker import EmbeddedBroker, ensure_topics
    from schemas.topics import DEFAULT_PARTITIONS

    title = "DICOM receive: instances/s, storescu (one association) → our SCP vs Orthanc and storescp"
    missing = [tool for tool in ("storescu", "storescp", "echoscu", "Orthanc") if shutil.which(tool) is None]
    if missing:
        return Outcome("dicom", title, status="not-done",
                       notes=[f"not on PATH: {', '.join(missing)} (apt-get install dcmtk orthanc)"])
    n = 100 if quick else 300
    repeats = 1 if quick else 2
    out = Outcome("dicom", title)
    tmp = Path(tempfile.mkdtemp(prefix="hrx-bench-dicom-"))
    try:
        files = make_instances(tmp / "data", n, STUDIES, tag=1)
        warm = make_instances(tmp / "warm", WARMUP, 1, tag=2)
        sizes = [p.stat().st_size for p in files]
        out.sizes = {"instances": n, "studies": STUDIES, "warmup_instances": WARMUP, "source": "pydicom CT_small.dcm",
                     "rows_x_columns": "128x128", "bits_allocated": 16,
                     "file_bytes": min(sizes) if len(set(sizes)) == 1 else [min(sizes), max(sizes)],
                     "total_mib": round(sum(sizes) / 2**20, 2), "runs_per_target": repeats,
                     "associations_per_run": 1}
        out.figures["versions"] = {
            "storescu": _tool_version(["storescu", "--version"]), "storescp": _tool_version(["storescp", "--version"]),
            "orthanc": _tool_version(["Orthanc", "--version"]), "pynetdicom": metadata.version("pynetdicom"),
            "pydicom": metadata.version("pydicom")}
        say(f"dicom: {n} instances of {out.sizes['file_bytes']} bytes in {STUDIES} studies; "
            f"{out.figures['versions']}")
        rows: list[dict[str, Any]] = []
        with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
            ensure_topics(broker.bootstrap, DEFAULT_PARTITIONS)
            targets: dict[str, Callable[[Path], Any]] = {
                "ours": lambda root: ours(root, broker.bootstrap),
                "orthanc": lambda root: orthanc(root, tcp_nodelay=False),
                "orthanc_nodelay": lambda root: orthanc(root, tcp_nodelay=True),
                "storescp": storescp}
            order = list(targets)
            for rep in range(repeats):
                for name in (order if rep % 2 == 0 else order[::-1]):
                    root = tmp / f"{name}-{rep}"
                    root.mkdir()
                    rows.append(one_run(name, targets[name](root), files, warm))
            root = tmp / "ours-nagle"
            root.mkdir()
            rows.append(one_run("ours", ours(root, broker.bootstrap), files, warm, nodelay=False))
        root = tmp / "bare"
        root.mkdir()
        rows.append(one_run("pynetdicom_bare", pynetdicom_bare(root), files, warm))
        out.figures["runs"] = rows
        best: dict[str, float | None] = {}
        for name in ("ours", "orthanc", "orthanc_nodelay", "storescp", "pynetdicom_bare"):
            mine = [r for r in rows if r["target"] == name and r["tcp_nodelay_sender"] == 1]
            good = [r["instances_per_s"] for r in mine if r["ok"]]
            complete = bool(mine) and len(good) == len(mine)
            best[name] = max(good) if complete else None
            out.figures[f"{name}_instances_per_s_best"] = best[name]
            out.figures[f"{name}_instances_per_s_median"] = round(statistics.median(good), 1) if complete else None
            if not complete:
                out.status = "error"
                out.notes.append(f"{name}: {len(mine) - len(good)} run(s) did not store every instance "
                                 "(reported as failed, no rate)")
        nagle = next(r for r in rows if r["tcp_nodelay_sender"] == 0)
        ours_nagle = nagle["instances_per_s"] if nagle["ok"] else None
        out.figures["ours_sender_tcp_nodelay_0_instances_per_s"] = ours_nagle

        def r(a: float | None, b: float | None) -> float | None:
            return ratio(a, b) if a and b else None

        out.ratios["ours_vs_orthanc"] = r(best["ours"], best["orthanc"])
        out.ratios["ours_vs_orthanc_tcp_nodelay_1"] = r(best["ours"], best["orthanc_nodelay"])
        out.ratios["ours_vs_storescp"] = r(best["ours"], best["storescp"])
        out.ratios["ours_sender_nagle_vs_nodelay"] = r(ours_nagle, best["ours"])
        out.ratios["pynetdicom_bare_vs_storescp"] = r(best["pynetdicom_bare"], best["storescp"])
        out.ratios["ours_vs_pynetdicom_bare"] = r(best["ours"], best["pynetdicom_bare"])
        for goal, key, floor in (("ge_5x_orthanc", "ours_vs_orthanc", 5),
                                 ("ge_5x_orthanc_with_tcp_nodelay_1", "ours_vs_orthanc_tcp_nodelay_1", 5),
                                 ("ge_0.3x_storescp", "ours_vs_storescp", 0.3)):
            value = out.ratios[key]
            out.goals[goal] = None if value is None else value >= floor
        out.goals["ours_0x0000_means_durable"] = True  # by construction: adapters/dicom/scp.py + spool.py
        out.notes += [
            ("instances/s = N / wall time of one storescu process (one association, TCP_NODELAY=1 in its "
            "environment); each run a fresh target with empty storage after a 3-instance warm-up; the best "
            "run of each target gives the ratios, every run is in figures.runs"),
            ("ours: `hrx adapter dicom-scp` child process (sets TCP_NODELAY + TCP_QUICKACK itself), 0x0000 only "
            f"after the SQLite (WAL, synchronous=FULL) commit; --stable-seconds {STABLE_SECONDS:g} so studies "
            "are published to tansu during the send; stored = spool rows counted after the SCP exited"),
            ("orthanc: built-in defaults (SQLite index, SyncStorageArea) except ports, AE title, storage/index "
            "dirs and BENCH as a known modality, started without TCP_NODELAY in its environment as the packaged "
            "service is: Orthanc's DICOM side (dcmtk) then leaves Nagle on; stored = GET /statistics"),
            "orthanc_nodelay: the same with TCP_NODELAY=1 in Orthanc's environment (dcmtk honours it)",
            ("storescp: `storescp -aet STORESCP -od DIR PORT` with TCP_NODELAY=1: plain files, no fsync, no "
            "index (the ceiling); stored = files written"),
            ("pynetdicom_bare: our server class (socket options + pynetdicom tuning) and contexts with a C-STORE "
            "handler answering 0x0000 without reading the data set, in a thread of the benchmark process (the "
            "floor of a pynetdicom SCP set up like ours)"),
            "ours with TCP_NODELAY=0 at the sender: one run (Nagle on at storescu's end)",
        ]
        say(f"dicom: best ours {best['ours']}/s, Orthanc {best['orthanc']}/s (TCP_NODELAY=1: "
            f"{best['orthanc_nodelay']}/s), storescp {best['storescp']}/s, bare pynetdicom "
            f"{best['pynetdicom_bare']}/s; ours/Orthanc {out.ratios['ours_vs_orthanc']} (goal ≥ 5; "
            f"{out.ratios['ours_vs_orthanc_tcp_nodelay_1']} against TCP_NODELAY=1), ours/storescp "
            f"{out.ratios['ours_vs_storescp']} (goal ≥ 0.3); sender with Nagle on → ours {ours_nagle}/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv).as_dict())
