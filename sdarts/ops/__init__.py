"""The mixed-op engine: custom ops, autograd and backend dispatch."""

from .backends import available as available_backends
from .mixed_sum import mixed_edge, mixed_sum

__all__ = ["mixed_sum", "mixed_edge", "available_backends"]
