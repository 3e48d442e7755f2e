"""Where the project's shared real data lives (read in place, never copied into the repo)."""

from __future__ import annotations

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shared_data_dir() -> str:
    """``$SDARTS_DATA`` when set, else ``<repo>/../shared/data`` (which may not exist)."""
    return os.environ.get("SDARTS_DATA") or os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))
