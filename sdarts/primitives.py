"""Candidate operations of the NAS-Bench-201 and DARTS search spaces, defined once.

Every candidate that ends in a BatchNorm exposes ``pre_bn(x, relu_x)`` and ``bn`` so that
:class:`sdarts.MixedOp` can fuse that last normalization into the mixed-sum kernel (the
normalized output is then never stored).  Candidates that start with ReLU take the
shared ``relu_x`` (one ReLU per edge instead of one per candidate: same values, less memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F


class Zero(nn.Module):
    """The ``none`` candidate: all zeros (subsampled for stride 2)."""

    def __init__(self, stride: int, C_out: Optional[int] = None):
        super().__init__()
        self.stride = stride
        self.C_out = C_out

    def forward(self, x):
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.C_out is not None and self.C_out != x.shape[1]:
            shape = list(x.shape)
            shape[1] = self.C_out
            return x.new_zeros(shape)
        return x.mul(0.0)


class BNEnding(nn.Module):
    """A candidate whose last layer is ``self.bn``: forward = bn(pre_bn(x))."""

    starts_with_relu = False

    def pre_bn(self, x: torch.Tensor, relu_x: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x):
        return self.bn(self.pre_bn(x))


def _relu(x, relu_x):
    return relu_x if relu_x is not None else F.relu(x)


class ReLUConvBN(BNEnding):
    starts_with_relu = True

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation=1, affine=True, track_running_stats=True):
        super().__init__()
        self.conv = nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def pre_bn(self, x, relu_x=None):
        return self.conv(_relu(x, relu_x))


class DilConv(BNEnding):
    starts_with_relu = True

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True, track_running_stats=True):
        super().__init__()
        self.depthwise = nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation=dilation, groups=C_in, bias=False)
        self.pointwise = nn.Conv2d(C_in, C_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def pre_bn(self, x, relu_x=None):
        return self.pointwise(self.depthwise(_relu(x, relu_x)))


class SepConv(BNEnding):
    """Two stacked dilation-1 DilConvs, as in DARTS (the first keeps C_in channels)."""

    starts_with_relu = True

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True, track_running_stats=True):
        super().__init__()
        self.first = DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine, track_running_stats)
        self.second = DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine, track_running_stats)
        self.bn = self.second.bn

    def pre_bn(self, x, relu_x=None):
        return self.second.pre_bn(self.first(x) if relu_x is None else self.first.bn(self.first.pre_bn(x, relu_x)))


class FactorizedReduce(BNEnding):
    """Stride-2 identity of DARTS/NB201: two offset 1x1 stride-2 convs, concatenated."""

    starts_with_relu = True

    def __init__(self, C_in, C_out, affine=True, track_running_stats=True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def pre_bn(self, x, relu_x=None):
        r = _relu(x, relu_x)
        return torch.cat([self.conv_1(r), self.conv_2(r[:, :, 1:, 1:])], dim=1)


class PoolBN(BNEnding):
    """A pooling candidate followed by a BatchNorm (the DARTS search convention)."""

    def __init__(self, kind, C, stride, affine=False, track_running_stats=True):
        super().__init__()
        self.pool = _pool(kind, stride)
        self.bn = nn.BatchNorm2d(C, affine=affine, track_running_stats=track_running_stats)

    def pre_bn(self, x, relu_x=None):
        return self.pool(x)


class NB201Pool(nn.Module):
    """NAS-Bench-201's pooling: a 1x1 ReLU-Conv-BN first only when channels change."""

    def __init__(self, C_in, C_out, stride, affine=True, track_running_stats=True):
        super().__init__()
        self.preprocess = None if C_in == C_out else ReLUConvBN(C_in, C_out, 1, 1, 0, 1, affine, track_running_stats)
        self.pool = _pool("avg", stride)

    def forward(self, x):
        return self.pool(x if self.preprocess is None else self.preprocess(x))


def _pool(kind: str, stride: int) -> nn.Module:
    if kind == "avg":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    return nn.MaxPool2d(3, stride=stride, padding=1)


def identity_or_reduce(C_in, C_out, stride, affine, track):
    if stride == 1 and C_in == C_out:
        return nn.Identity()
    return FactorizedReduce(C_in, C_out, affine, track)


# name -> builder(C_in, C_out, stride, affine, track_running_stats)
NB201_OPS: Dict[str, Callable[..., nn.Module]] = {
    "none": lambda Ci, Co, s, a, t: Zero(s, Co),
    "skip_connect": identity_or_reduce,
    "nor_conv_1x1": lambda Ci, Co, s, a, t: ReLUConvBN(Ci, Co, 1, s, 0, 1, a, t),
    "nor_conv_3x3": lambda Ci, Co, s, a, t: ReLUConvBN(Ci, Co, 3, s, 1, 1, a, t),
    "avg_pool_3x3": lambda Ci, Co, s, a, t: NB201Pool(Ci, Co, s, a, t),
}

DARTS_OPS: Dict[str, Callable[..., nn.Module]] = {
    "none": lambda Ci, Co, s, a, t: Zero(s),
    "max_pool_3x3": lambda Ci, Co, s, a, t: _pool("max", s),
    "avg_pool_3x3": lambda Ci, Co, s, a, t: _pool("avg", s),
    "skip_connect": identity_or_reduce,
    "sep_conv_3x3": lambda Ci, Co, s, a, t: SepConv(Ci, Co, 3, s, 1, a, t),
    "sep_conv_5x5": lambda Ci, Co, s, a, t: SepConv(Ci, Co, 5, s, 2, a, t),
    "sep_conv_7x7": lambda Ci, Co, s, a, t: SepConv(Ci, Co, 7, s, 3, a, t),
    "dil_conv_3x3": lambda Ci, Co, s, a, t: DilConv(Ci, Co, 3, s, 2, 2, a, t),
    "dil_conv_5x5": lambda Ci, Co, s, a, t: DilConv(Ci, Co, 5, s, 4, 2, a, t),
}


@dataclass(frozen=True)
class PrimitiveSet:
    """A search space's candidate list and its conventions.

    ``pool_bn``: pools are followed by a non-affine BatchNorm inside a mixed op (DARTS search).
    ``track_running_stats``: whether search BatchNorms keep running statistics.
    """

    name: str
    names: Tuple[str, ...]
    builders: Dict[str, Callable[..., nn.Module]]
    pool_bn: bool
    track_running_stats: bool

    def __iter__(self):
        return iter(self.names)

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        return self.names[i]

    def index(self, name: str) -> int:
        return self.names.index(name)

    def with_names(self, names: Sequence[str]) -> "PrimitiveSet":
        unknown = [n for n in names if n not in self.builders]
        if unknown:
            raise ValueError(f"unknown {self.name} primitives {unknown}; known: {sorted(self.builders)}")
        # A repeated skip or pool would get no weight of its own (MixedOp weighs the first).
        repeated = sorted({n for n in names if list(names).count(n) > 1})
        if repeated:
            raise ValueError(f"primitives names {repeated} more than once; each candidate appears once per edge")
        return PrimitiveSet(self.name, tuple(names), self.builders, self.pool_bn, self.track_running_stats)

    def build_search_op(self, name: str, C_in: int, C_out: int, stride: int) -> nn.Module:
        """The candidate as a search supernet uses it (non-affine BatchNorms)."""
        op = self.builders[name](C_in, C_out, stride, False, self.track_running_stats)
        if self.pool_bn and "pool" in name:
            return PoolBN("max" if name.startswith("max") else "avg", C_out, stride, False, self.track_running_stats)
        return op

    def build_op(self, name: str, C_in: int, C_out: int, stride: int, affine: bool = True) -> nn.Module:
        """The candidate as a discrete (retrained) network uses it."""
        return self.builders[name](C_in, C_out, stride, affine, True)


NB201 = PrimitiveSet(
    "nb201",
    ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"),
    NB201_OPS,
    pool_bn=False,
    track_running_stats=False,
)
DARTS = PrimitiveSet(
    "darts",
    ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"),
    DARTS_OPS,
    pool_bn=True,
    track_running_stats=True,
)

# The original DARTS code's global, for drop-in use.
PRIMITIVES = list(DARTS.names)

# The sets a list of names is resolved against, by their attribute name here.  DARTS first:
# names both sets have (["none", "skip_connect"]) keep the DARTS conventions, as they always did.
KNOWN_SETS: Dict[str, PrimitiveSet] = {"DARTS": DARTS, "NB201": NB201}


def _known_sets() -> str:
    return "; ".join(f"sdarts.primitives.{attr} = {[*s.names, *sorted(set(s.builders) - set(s.names))]}"
                     for attr, s in KNOWN_SETS.items())


def resolve_primitives(primitives: Union[PrimitiveSet, str, Sequence[str]]) -> PrimitiveSet:
    """``primitives`` as :class:`sdarts.MixedOp` takes it: a :class:`PrimitiveSet`, a known set's
    name (``"darts"``, ``"nb201"``, any case) or a list of candidate names, which keeps its order
    and takes the conventions of the first known set that has every name."""
    if isinstance(primitives, PrimitiveSet):
        return primitives
    if isinstance(primitives, str):  # a set's name, never its letters as candidate names
        if primitives.upper() in KNOWN_SETS:
            return KNOWN_SETS[primitives.upper()]
        set_names = ", ".join(repr(s.name) for s in KNOWN_SETS.values())
        raise ValueError(f"primitives={primitives!r} is not a known set name ({set_names}); "
                         "pass a PrimitiveSet or a list of candidate names")
    if not isinstance(primitives, Iterable):
        raise TypeError("primitives must be a PrimitiveSet, a set name or a list of candidate names, "
                        f"got {type(primitives).__name__}")
    names = list(primitives)
    if not names:
        raise ValueError("primitives must name at least one candidate, got an empty list")
    wrong = [n for n in names if not isinstance(n, str)]
    if wrong:
        raise TypeError(f"primitives must be candidate names (str), got {wrong[0]!r} ({type(wrong[0]).__name__})")
    for known in KNOWN_SETS.values():
        if all(n in known.builders for n in names):
            return known.with_names(names)
    closest = max(KNOWN_SETS.values(), key=lambda s: sum(n in s.builders for n in names))  # the first on a tie
    unknown = [n for n in names if n not in closest.builders]
    raise ValueError(f"unknown {closest.name} primitives {unknown} in primitives={names} (no known set has them all); "
                     f"known sets: {_known_sets()}")
