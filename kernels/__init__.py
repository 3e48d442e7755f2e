"""Triton kernels of sdarts (installed as ``sdarts.kernels``).

The names are resolved lazily so that importing the package does not import Triton (and
freeze its TRITON_INTERPRET setting) before it is needed.
"""

__all__ = ["mixed_forward", "mixed_backward", "MAX_BRANCHES"]


def __getattr__(name):
    if name in __all__:
        from . import mixed_sum

        return getattr(mixed_sum, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
