"""sdarts: Single-DARTS neural architecture search on a fused mixed-op engine."""

from .ops import available_backends, mixed_edge, mixed_sum

__version__ = "0.1.0"

__all__ = ["mixed_sum", "mixed_edge", "available_backends", "MixedOp", "__version__"]


def __getattr__(name):
    # MixedOp pulls in the primitives; import lazily so `import sdarts` stays light.
    if name == "MixedOp":
        from .mixed_op import MixedOp

        return MixedOp
    raise AttributeError(name)
