"""Files that hold secrets (the pseudonym key, the stack file with the store's URL, a TLS key) are readable by
the service user only: created with mode 0600, in directories created with mode 0700.

The mode is given at creation (``os.open``/``mkdir``), never set by a chmod after writing, so that no other user
can open the file in between. A secret found readable by others is reported, not refused: group-readable keys
(``root:hrx 0640``) and container secrets mounted 0444 are deliberate deployments that a refusal would break.
"""
from __future__ import annotations

import logging
import stat
from pathlib import Path

log = logging.getLogger(__name__)

#: A file holding a secret: read and write for its owner only.
PRIVATE_FILE_MODE = 0o600
#: A directory holding such files (the var directory): its owner only.
PRIVATE_DIR_MODE = 0o700


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and its missing parents) with mode 0700; an existing directory is left as it is."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)


def readable_by_others(path: Path) -> str | None:
    """Why ``path`` is readable by users other than its owner (``"mode 0644: group and others can read it"``),
    or None when only its owner can read it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    who = [name for bit, name in ((stat.S_IRGRP, "group"), (stat.S_IROTH, "others")) if mode & bit]
    if not who:
        return None
    return f"mode {mode:04o}: {' and '.join(who)} can read it"


def warn_if_readable_by_others(path: Path, what: str) -> None:
    """Log a warning naming ``what`` (``"pseudonym key"``) when ``path`` is readable by others than its owner."""
    problem = readable_by_others(path)
    if problem is not None:
        log.warning("%s %s has %s; only the service user should (chmod 600 %s)", what, path, problem, path)
