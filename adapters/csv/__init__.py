"""CSV/TSV result exports of a laboratory information system (LIS): one observation per row.

``hrx adapter csv FILE --institution ID --profile NAME`` reads a file written by a hospital's LIS, turns it
into lab reports and publishes them through the shared :class:`~adapters.pipeline.ResultPipeline`. The
file is read through a column profile (``adapters/profiles/README.md``).

- :mod:`.profile`: column profiles, loaded from ``adapters/profiles/*.yaml``;
- :mod:`.decode`: encoding and delimiter detection, the header row, the table of rows;
- :mod:`.rows`: one row → an observation and its report-level cells, or the reasons it is bad;
- :mod:`.reports`: rows grouped by report number and version into lab reports;
- :mod:`.run`: :func:`import_file`, checking, publishing in batches and dead-lettering one file.
"""
from __future__ import annotations

from adapters.csv.decode import AUTO_DELIMITERS, DELIMITER_NAMES, CsvFileError, Table, decode_bytes, read_table
from adapters.csv.profile import (DELIMITERS, FIELDS, PROFILES_DIR, REQUIRED, Profile, ProfileError,
                                  available_profiles, encoding_name, load_profile)
from adapters.csv.reports import ReportGroup, build_reports, group_rows
from adapters.csv.rows import BadRow, Row, parse_row
from adapters.csv.run import BATCH_REPORTS, DEAD_LETTER_BATCH, ImportSummary, Problem, Progress, import_file

__all__ = [
    "AUTO_DELIMITERS", "BATCH_REPORTS", "DEAD_LETTER_BATCH", "DELIMITERS", "DELIMITER_NAMES", "FIELDS",
    "PROFILES_DIR", "REQUIRED", "BadRow", "CsvFileError", "ImportSummary", "Problem", "Profile", "ProfileError",
    "Progress", "ReportGroup", "Row", "Table", "available_profiles", "build_reports", "decode_bytes",
    "encoding_name", "group_rows", "import_file", "load_profile", "parse_row", "read_table",
]
