"""Placeholder: the command still lives in the adapter; it moves here."""
from adapters.hl7v2 import hl7  # noqa: F401
