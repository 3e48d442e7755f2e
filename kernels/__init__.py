"""Triton kernels of sdarts (installed as ``sdarts.kernels``).

The names are resolved lazily so that importing the package does not import Triton (and
freeze its TRITON_INTERPRET setting) before it is needed.  ``INTERPRETED`` is that setting,
read once here for every user (the kernels' hosts and ``sdarts.ops.backends``).
"""

import os

# Triton reads the variable when it is first imported; so do we, once.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"

__all__ = ["mixed_forward", "mixed_backward", "MAX_BRANCHES", "INTERPRETED"]


def __getattr__(name):
    if name in ("mixed_forward", "mixed_backward", "MAX_BRANCHES"):
        from . import mixed_sum

        return getattr(mixed_sum, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
