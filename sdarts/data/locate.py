"""Where the project's shared real data lives (read in place, never copied into the repo).

One rule, here only: ``$SDARTS_DATA`` when set; else, when sdarts runs from a source checkout
(a ``pyproject.toml`` beside the package), the checkout's sibling ``../shared/data`` (the layout
of the project's own machines).  An installed copy has no such sibling and says so instead of
guessing a path inside site-packages.
"""

from __future__ import annotations

import os
from typing import Optional

CHECKOUT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def checkout_data_dir() -> Optional[str]:
    """``<checkout>/../shared/data`` when sdarts runs from a source checkout, else None."""
    if not os.path.isfile(os.path.join(CHECKOUT_ROOT, "pyproject.toml")):
        return None
    return os.path.normpath(os.path.join(CHECKOUT_ROOT, "..", "shared", "data"))


def shared_data_dir() -> str:
    """``$SDARTS_DATA`` when set, else the checkout's ``../shared/data`` (which may not exist);
    for an installed copy without ``$SDARTS_DATA``, ``"$SDARTS_DATA (unset)"``, a path that
    exists nowhere, so that every error about a missing file names the variable to set."""
    return os.environ.get("SDARTS_DATA") or checkout_data_dir() or "$SDARTS_DATA (unset)"
