"""Stand-in user code: a DARTS search network written the way DARTS-family code bases write it.

This is the code ``sdarts.MixedOp`` is meant to drop into, written here from the structure of
the original DARTS ``cnn/model_search.py`` + ``cnn/operations.py`` (not copied): a ``MixedOp``
class summing ``w * op(x)`` over its candidates, a ``Cell`` that preprocesses its two inputs
(``ReLUConvBN`` or ``FactorizedReduce``) and calls its 14 edges as
``self._ops[offset + j](h, weights[offset + j])``, and a ``Network`` holding the alphas, taking
their softmax in ``forward`` and deriving ``genotype()``.  Nothing in it knows about sdarts.

The swap, as a user makes it, is one line at the top of the file::

    from sdarts import MixedOp        # instead of defining `class MixedOp` here

:func:`load` does exactly that to a fresh copy of this module (the original class is
replaced by ``sdarts.MixedOp`` in the module's namespace before any ``Cell`` is built), so the
benchmark and the tests hold the original and the swapped network side by side.

Two primitive sets: ``"darts"`` (the DARTS search convention: pools followed by a
non-affine BatchNorm) and ``"nb201"`` (NAS-Bench-201's five candidates in the DARTS cell:
BatchNorms without running statistics, pools without BatchNorm), chosen by
``Network(..., primitives=...)``, which the cell hands to ``MixedOp(C, stride, primitives)``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import namedtuple
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")

DARTS_PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
NB201_PRIMITIVES = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


# ----------------------------------------------------------------------------- operations


class ReLUConvBN(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True, track_running_stats=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats),
        )

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, 1, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    def __init__(self, C_in, C_out, affine=True, track_running_stats=True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def _avg_pool(stride):
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


DARTS_OPS = {
    "none": lambda C, stride, affine: Zero(stride),
    "avg_pool_3x3": lambda C, stride, affine: _avg_pool(stride),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
}

# NAS-Bench-201's candidates as its search code builds them: no running statistics.
NB201_OPS = {
    "none": lambda C, stride, affine: Zero(stride),
    "skip_connect": lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine, False),
    "nor_conv_1x1": lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine, False),
    "nor_conv_3x3": lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine, False),
    "avg_pool_3x3": lambda C, stride, affine: _avg_pool(stride),
}

# primitives name -> (candidate names, builders, whether pools get a BatchNorm in the mixed op)
SPACES = {"darts": (DARTS_PRIMITIVES, DARTS_OPS, True), "nb201": (NB201_PRIMITIVES, NB201_OPS, False)}


# ----------------------------------------------------------------------------- search network


class MixedOp(nn.Module):
    def __init__(self, C, stride, primitives="darts"):
        super().__init__()
        names, ops, pool_bn = SPACES[primitives]
        self._ops = nn.ModuleList()
        for name in names:
            op = ops[name](C, stride, False)
            if pool_bn and "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class Cell(nn.Module):
    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, primitives="darts"):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        self._ops = nn.ModuleList()
        for i in range(self._steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(MixedOp(C, stride, primitives))

    def forward(self, s0, s1, weights):
        s0 = self.preprocess0(s0)
        s1 = self.preprocess1(s1)
        states = [s0, s1]
        offset = 0
        for _ in range(self._steps):
            s = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)


class Network(nn.Module):
    def __init__(self, C, num_classes, layers, criterion=None, steps=4, multiplier=4, stem_multiplier=3,
                 primitives="darts"):
        super().__init__()
        self._C = C
        self._num_classes = num_classes
        self._layers = layers
        self._criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
        self._steps = steps
        self._multiplier = multiplier
        self._primitives = primitives
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            if i in [layers // 3, 2 * layers // 3]:
                C_curr *= 2
                reduction = True
            else:
                reduction = False
            cell = Cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, primitives)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self._initialize_alphas()

    def forward(self, input):
        s0 = s1 = self.stem(input)
        for cell in self.cells:
            weights = F.softmax(self.alphas_reduce if cell.reduction else self.alphas_normal, dim=-1)
            s0, s1 = s1, cell(s0, s1, weights)
        out = self.global_pooling(s1)
        return self.classifier(out.view(out.size(0), -1))

    def _loss(self, input, target):
        return self._criterion(self(input), target)

    def _initialize_alphas(self):
        k = sum(1 for i in range(self._steps) for _ in range(2 + i))
        num_ops = len(SPACES[self._primitives][0])
        # Registered, so that .to() / .double() / state_dict carry them (the original held bare tensors).
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(k, num_ops))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(k, num_ops))

    def arch_parameters(self):
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self):
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def genotype(self):
        names = SPACES[self._primitives][0]
        none = names.index("none")

        def _parse(weights):
            gene = []
            start, n = 0, 2
            for _ in range(self._steps):
                W = weights[start:start + n]
                strength = [max(w for k, w in enumerate(row) if k != none) for row in W]
                edges = sorted(range(n), key=lambda j: -strength[j])[:2]
                for j in edges:
                    best = max((k for k in range(len(W[j])) if k != none), key=lambda k: W[j][k])
                    gene.append((names[best], j))
                start += n
                n += 1
            return gene

        concat = list(range(2 + self._steps - self._multiplier, self._steps + 2))
        return Genotype(
            normal=_parse(F.softmax(self.alphas_normal, dim=-1).tolist()), normal_concat=concat,
            reduce=_parse(F.softmax(self.alphas_reduce, dim=-1).tolist()), reduce_concat=concat,
        )


# ----------------------------------------------------------------------------- the swap


def load(dropin: bool):
    """A fresh copy of this module; with ``dropin`` its ``MixedOp`` is ``sdarts.MixedOp``, as
    after the user's one-line edit ``from sdarts import MixedOp``."""
    name = f"dropin_darts_{'sdarts' if dropin else 'original'}"
    spec = importlib.util.spec_from_file_location(name, Path(__file__))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if dropin:
        from sdarts import MixedOp as SdartsMixedOp

        module.MixedOp = SdartsMixedOp
    return module


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Make ``dst`` hold ``src``'s parameters and buffers, matched in registration order (the
    swapped MixedOp names its modules differently but creates them in the same order)."""
    def buffers(m):  # persistent ones (sdarts.MixedOp also holds an index buffer of its own)
        kept = m.state_dict(keep_vars=True).keys()
        return [(n, b) for n, b in m.named_buffers() if n in kept]

    pairs = [(list(src.named_parameters()), list(dst.named_parameters())), (buffers(src), buffers(dst))]
    with torch.no_grad():
        for theirs, ours in pairs:
            if len(theirs) != len(ours):
                raise ValueError(f"different numbers of tensors: {len(theirs)} vs {len(ours)}")
            for (a_name, a), (b_name, b) in zip(theirs, ours):
                if a.shape != b.shape:
                    raise ValueError(f"{a_name} {tuple(a.shape)} does not match {b_name} {tuple(b.shape)}")
                b.copy_(a)
