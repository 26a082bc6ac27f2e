"""What one import run has checked, kept on disk until it is published: memory stays bounded whatever the
file's size.

A spill is an anonymous temporary file (unlinked as it is created, gone when closed or when the process
ends) of JSON documents, one per line. It holds only what the run is about to publish: validated events,
whose patient is already a pseudonym, and dead letters, already scrubbed of resident IDs (docs/rules.md,
"Privacy").
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import orjson


class Spill:
    """Append JSON documents, then read them back in batches, in the order they were appended."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="hrx-csv-")  # noqa: SIM115 - closed by close()
        self.count = 0

    def append(self, document: Any) -> None:
        self._file.write(orjson.dumps(document) + b"\n")
        self.count += 1

    def batches(self, size: int) -> Iterator[list[Any]]:
        """Every document appended so far, ``size`` at a time."""
        self._file.seek(0)
        batch: list[Any] = []
        for line in self._file:
            batch.append(orjson.loads(line))
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
