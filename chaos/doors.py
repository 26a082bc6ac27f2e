"""The exchange's doors as a hospital meets them, and a sender that keeps delivering through a fault.

Each door answers one :class:`~chaos.data.Item` with :data:`ACK` (the source may forget it: HTTP 200, AA/CA,
0x0000 for every instance, CSV exit 0), :data:`REFUSED` (the documented "resend later": HTTP 503, AE/CE,
0xA700, CSV exit 2), :data:`HANG` (no answer within the client's timeout) or an error text (anything else).
A :class:`Sender` delivers items one after the other at a steady pace and, like a well-behaved source,
resends an item until it is acknowledged; it records when each item was acknowledged.
"""
from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.access import Clients

from chaos.data import Item

ACK, REFUSED, HANG = "ack", "refused", "hang"
#: Pause before a resend, as a source's retry interval.
RETRY_PAUSE = 0.25


class Door(Protocol):
    name: str

    def send(self, item: Item) -> str: ...

    def close(self) -> None: ...


class FhirDoor:
    """``POST /fhir`` on the API (``hrx serve``)."""

    name = "fhir"

    def __init__(self, base_url: str, clients: Clients, timeout: float = 30.0) -> None:
        import httpx

        self._client = httpx.Client(base_url=base_url, timeout=timeout)
        self._clients = clients  # each Bundle is sent by its issuer's source client
        self.http_5xx = 0

    def send(self, item: Item) -> str:
        import httpx

        issuer = item.keys[0][0]
        try:
            response = self._client.post("/fhir", content=item.payload,
                                         headers={"Content-Type": "application/fhir+json",
                                                  **self._clients.source(issuer)})
        except httpx.TimeoutException:
            return HANG
        except httpx.TransportError as exc:
            return f"connection: {exc!r}"
        if response.status_code == 200:
            return ACK
        if response.status_code == 503:
            return REFUSED
        if response.status_code >= 500:
            self.http_5xx += 1
        return f"HTTP {response.status_code}: {response.text[:200]}"

    def close(self) -> None:
        self._client.close()


class Hl7Door:
    """The MLLP listener (``hrx adapter hl7 --listen``), one connection, reopened after an error."""

    name = "hl7"

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port = port
        self.timeout = timeout
        self._client = None

    def send(self, item: Item) -> str:
        from adapters.hl7 import MLLPClient

        try:
            if self._client is None:
                self._client = MLLPClient("127.0.0.1", self.port, timeout=self.timeout)
            reply = self._client.send(item.payload)
        except TimeoutError:
            self.close()
            return HANG
        except OSError as exc:
            self.close()
            return f"connection: {exc!r}"
        code = re.search(rb"\rMSA\|([A-Z]{2})", reply)
        if code and code.group(1) in (b"AA", b"CA"):
            return ACK
        if code and code.group(1) in (b"AE", b"CE"):
            return REFUSED
        return f"reply {reply[:200]!r}"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class DicomDoor:
    """C-STORE with dcmtk's ``storescu`` (one association per study) to the SCP (``hrx adapter dicom-scp``);
    a resend carries only the instances not yet answered 0x0000."""

    name = "dicom"

    def __init__(self, port: int, called: str = "HRX", timeout: float = 60.0) -> None:
        self.port = port
        self.called = called
        self.timeout = timeout
        self.stored: set[Path] = set()
        self.statuses: dict[str, int] = {}

    def forget(self, item: Item) -> None:
        """Send every instance of ``item`` again next time, as a modality resending a whole study."""
        self.stored.difference_update(item.files)

    def send(self, item: Item) -> str:
        files = [f for f in item.files if f not in self.stored]
        answers, error = storescu(self.port, files, self.called, self.timeout)
        if error == HANG:
            return HANG
        for path, answer in zip(files, answers, strict=False):
            self.statuses[answer] = self.statuses.get(answer, 0) + 1
            if answer == "Success":
                self.stored.add(path)
        if all(f in self.stored for f in item.files):
            return ACK
        if any(out_of_resources(a) for a in answers):
            return REFUSED
        return error or f"responses {answers}"

    def close(self) -> None:
        pass


def out_of_resources(answer: str) -> bool:
    """Whether a storescu response text is 0xA7xx, "Refused: Out of Resources" (dcmtk: ``OutOfResources``)."""
    return "outofresources" in answer.replace(" ", "").lower()


def storescu(port: int, files: list[Path], called: str = "HRX", timeout: float = 60.0) -> tuple[list[str], str | None]:
    """Send ``files`` in one association (``-nh``: go on after a refusal); the C-STORE responses in file order
    (dcmtk's text, e.g. ``Success`` or ``A700: Refused: Out of Resources``) and an error, if any."""
    try:
        proc = subprocess.run(["storescu", "-v", "-nh", "-aet", "CHAOS", "-aec", called, "127.0.0.1", str(port),
                               *map(str, files)], capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return [], HANG
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    answers = re.findall(r"Received Store Response \(([^)]*)\)", out)
    error = None if len(answers) == len(files) else f"storescu exit {proc.returncode}: {out[-300:]!r}"
    return answers, error


class CsvDoor:
    """``adapters.csv.import_file`` of an export file (``hrx adapter csv``), in this process."""

    name = "csv"

    def __init__(self, bootstrap: str, pseudonym_key: str) -> None:
        from adapters.csv import load_profile
        from adapters.pipeline import ResultPipeline
        from adapters.pseudonymize import Pseudonymizer
        from adapters.publish import Publisher
        from codes import load_codebook

        from chaos.data import CSV_PROFILE

        self.profile = load_profile(CSV_PROFILE)
        self.publisher = Publisher(bootstrap, client_id="chaos-csv")
        self.pipeline = ResultPipeline(load_codebook(), Pseudonymizer(pseudonym_key.encode()), self.publisher)

    def send(self, item: Item) -> str:
        from adapters.csv import import_file

        from chaos.data import CSV_INSTITUTION

        summary = import_file(item.files[0], CSV_INSTITUTION, self.profile, self.pipeline)
        if summary.exit_code == 0:
            return ACK
        if summary.exit_code == 2:
            return REFUSED
        return f"exit {summary.exit_code}: {[str(p) for p in summary.problems[:3]]}"

    def close(self) -> None:
        self.publisher.close()


@dataclass
class Delivery:
    """One item at its door: how often it was sent, what came back, when it was acknowledged (monotonic)."""

    item: Item
    tries: int = 0
    refusals: int = 0
    hangs: int = 0
    errors: list[str] = field(default_factory=list)
    acknowledged_at: float | None = None


class Sender:
    """Delivers ``make(0)``, ``make(1)``, … through ``door`` at ``rate`` items/s until stopped, resending each
    item until it is acknowledged or ``give_up_after`` seconds passed."""

    def __init__(self, door: Door, make: Callable[[int], Item], rate: float, give_up_after: float = 120.0) -> None:
        self.door = door
        self.make = make
        self.rate = rate
        self.give_up_after = give_up_after
        self.deliveries: list[Delivery] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sender-{door.name}", daemon=True)

    def start(self) -> Sender:
        self._thread.start()
        return self

    def stop(self, timeout: float = 180.0) -> None:
        """Stop after the item under way is acknowledged (or given up); the door stays open."""
        self._stop.set()
        self._thread.join(timeout)

    def acknowledged_since(self, moment: float) -> int:
        return sum(1 for d in list(self.deliveries) if d.acknowledged_at is not None and d.acknowledged_at >= moment)

    def _run(self) -> None:
        started = time.monotonic()
        n = 0
        while not self._stop.is_set():
            if (delay := started + n / self.rate - time.monotonic()) > 0 and self._stop.wait(delay):
                return
            delivery = Delivery(self.make(n))
            self.deliveries.append(delivery)
            self._deliver(delivery)
            n += 1

    def _deliver(self, delivery: Delivery) -> None:
        first = time.monotonic()
        while True:
            answer = self.door.send(delivery.item)
            delivery.tries += 1
            if answer == ACK:
                delivery.acknowledged_at = time.monotonic()
                return
            if answer == REFUSED:
                delivery.refusals += 1
            elif answer == HANG:
                delivery.hangs += 1
            else:
                delivery.errors.append(answer)
            if time.monotonic() - first > self.give_up_after:
                return
            time.sleep(RETRY_PAUSE)
