"""CSV harness: the bytes of an LIS export → table → rows → reports → events, under every shipped profile.

The whole import of one file as ``hrx adapter csv`` runs it, :func:`adapters.csv.import_file`, with a broker
that acknowledges everything: decoding and the header search (:func:`~adapters.csv.read_table`), every row
(:func:`~adapters.csv.parse_row`), the report groups (:func:`~adapters.csv.group_rows`,
:func:`~adapters.csv.build_reports`), the pipeline's ``lab_event``, publishing and the dead letters of the
rejected rows, then the operator's summary.

Contract: ``import_file`` never raises for bad data; a file it cannot read (:class:`~adapters.csv.CsvFileError`)
is refused *in* its summary, and bad rows and reports are rejected there too.
"""
from __future__ import annotations

from fuzz.harness import FUZZ_KEY, AcknowledgingBroker, fuzz, instrumented, work_dir

with instrumented():
    from adapters.csv import available_profiles, import_file, load_profile
    from adapters.pipeline import ResultPipeline
    from adapters.pseudonymize import Pseudonymizer
    from codes import load_codebook

PIPELINE = ResultPipeline(load_codebook(), Pseudonymizer(FUZZ_KEY), AcknowledgingBroker())  # type: ignore[arg-type]

#: Each shipped profile is read for the hospital whose mapping table the test exports of that profile are
#: written for (tests/adapters/csv), so that their local codes map and rows get as far as the envelope.
HOSPITAL_OF_PROFILE = {"lis-detail-zh": "bj-xicheng-001"}
DEFAULT_HOSPITAL = "zj-hz-001"
PROFILES = [(load_profile(name), HOSPITAL_OF_PROFILE.get(name, DEFAULT_HOSPITAL)) for name in available_profiles()]

#: The adapter reads a path: each input is written to this one file first.
EXPORT = work_dir("csv") / "export.csv"


def one_input(data: bytes) -> None:
    EXPORT.write_bytes(data)
    for profile, hospital in PROFILES:
        summary = import_file(EXPORT, hospital, profile, PIPELINE)
        summary.lines()


if __name__ == "__main__":
    fuzz(one_input)
