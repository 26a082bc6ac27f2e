"""CSV/TSV result exports of a laboratory information system (LIS): one observation per row.

``hrx adapter csv FILE --institution ID --profile NAME`` reads a file written by a hospital's LIS, turns it
into lab reports and publishes them through the shared :class:`~adapters.pipeline.ResultPipeline`. The
file is read through a column profile (``adapters/profiles/README.md``).

- :mod:`.profile`: column profiles, loaded from ``adapters/profiles/*.yaml``;
- :mod:`.decode`: encoding and delimiter detection, the header row, the data rows read one at a time;
- :mod:`.rows`: one row → an observation and its report-level cells, or the reasons it is bad;
- :mod:`.reports`: rows grouped by report number and version into lab reports as the file is read;
- :mod:`.spill`: what a run has checked, on disk until it is published;
- :mod:`.run`: :func:`import_file`, checking, publishing in batches and dead-lettering one file.
"""
from __future__ import annotations

from adapters.csv.decode import AUTO_DELIMITERS, DELIMITER_NAMES, CsvFileError, Table, detect_encoding, read_table
from adapters.csv.profile import (DELIMITERS, FIELDS, PROFILES_DIR, REQUIRED, Profile, ProfileError,
                                  available_profiles, encoding_name, load_profile)
from adapters.csv.reports import ReportGroup, ReportGrouper, build_reports
from adapters.csv.rows import BadRow, Row, parse_row, report_key
from adapters.csv.run import (BATCH_REPORTS, DEAD_LETTER_BATCH, ImportSummary, Problem, Progress, ReportIndex,
                              import_file, index_reports)
from adapters.csv.spill import Spill

__all__ = [
    "AUTO_DELIMITERS", "BATCH_REPORTS", "DEAD_LETTER_BATCH", "DELIMITERS", "DELIMITER_NAMES", "FIELDS",
    "PROFILES_DIR", "REQUIRED", "BadRow", "CsvFileError", "ImportSummary", "Problem", "Profile", "ProfileError",
    "Progress", "ReportGroup", "ReportGrouper", "ReportIndex", "Row", "Spill", "Table", "available_profiles",
    "build_reports", "detect_encoding", "encoding_name", "import_file", "index_reports", "load_profile",
    "parse_row", "read_table", "report_key",
]
