"""Placeholder: the command still lives in the adapter; it moves here."""
from adapters.csv_export import csv  # noqa: F401
