"""Unified item codes, institutions, catalogues and local code mappings for HR Exchange.

Data lives in files (``codes/data`` ships a demo; operators point ``HRX_CODES_DIR`` or
``hrx up --codes DIR`` at their own). ``codes/README.md`` documents every format.
"""

from codes.book import CodeBook, default_codes_dir, load_codebook
from codes.model import (
    Alliance, Catalogue, CatalogueItem, CodeError, GradeOverlay, Institution, Item, Mapping, Problem,
    QcCertificate, Region,
)

__all__ = [
    "Alliance", "Catalogue", "CatalogueItem", "CodeBook", "CodeError", "GradeOverlay", "Institution", "Item",
    "Mapping", "Problem", "QcCertificate", "Region", "default_codes_dir", "load_codebook",
]
