"""Files made durable: shared by the spool (ingest) and the photo store (reports)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """A rename (or a new file or folder) is durable only once its directory entry reaches
    the disk: fsync the directory itself."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
