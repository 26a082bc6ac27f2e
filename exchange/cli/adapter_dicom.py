"""Placeholder: the command still lives in the adapter; it moves here."""
from adapters.dicom.cli import dicom_pull, dicom_scp  # noqa: F401
