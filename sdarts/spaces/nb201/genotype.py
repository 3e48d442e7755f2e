"""A NAS-Bench-201 cell as a small value type that parses and prints the benchmark's strings.

A cell has 4 nodes; node j (1..3) sums one operation applied to every earlier node i < j.
The benchmark writes it node by node, inputs in order:

    |nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|

so its 6 operations, read left to right, are the edges (1<-0), (2<-0), (2<-1), (3<-0), (3<-1),
(3<-2): the order of :data:`EDGES`, of the supernet's alpha rows and of :attr:`NB201Cell.ops`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

from ...primitives import NB201

NUM_NODES = 4
# (to, from) for every edge, in the benchmark's string order.
EDGES: Tuple[Tuple[int, int], ...] = tuple((j, i) for j in range(1, NUM_NODES) for i in range(j))
EDGE_NAMES: Tuple[str, ...] = tuple(f"{j}<-{i}" for j, i in EDGES)
OPS: Tuple[str, ...] = NB201.names


@dataclass(frozen=True)
class NB201Cell:
    """One NAS-Bench-201 cell: the operation on each of the 6 edges, in :data:`EDGES` order."""

    ops: Tuple[str, ...]

    def __post_init__(self):
        ops = tuple(self.ops)
        if len(ops) != len(EDGES):
            raise ValueError(f"ops must name {len(EDGES)} operations (one per edge {', '.join(EDGE_NAMES)}), got {len(ops)}")
        unknown = [op for op in ops if op not in OPS]
        if unknown:
            raise ValueError(f"unknown NAS-Bench-201 operation(s) {unknown}; known: {list(OPS)}")
        object.__setattr__(self, "ops", ops)

    @classmethod
    def from_ops(cls, ops: Sequence[str]) -> "NB201Cell":
        if isinstance(ops, str):
            raise TypeError("ops must be a sequence of 6 operation names, not one string (use NB201Cell.from_str)")
        return cls(tuple(ops))

    @classmethod
    def from_str(cls, arch_str: str) -> "NB201Cell":
        """Parse the benchmark's ``|op~i|+|op~i|op~i|+|...|`` format."""
        if not isinstance(arch_str, str):
            raise TypeError(f"arch_str must be a str, got {type(arch_str).__name__}")
        nodes = arch_str.strip().split("+")
        if len(nodes) != NUM_NODES - 1:
            raise ValueError(f"arch_str must describe {NUM_NODES - 1} nodes separated by '+', got {len(nodes)}: {arch_str!r}")
        ops = []
        for j, node in enumerate(nodes, start=1):
            if not (node.startswith("|") and node.endswith("|")):
                raise ValueError(f"node {j} of arch_str must be written '|op~i|...|', got {node!r}")
            inputs = node[1:-1].split("|")
            if len(inputs) != j:
                raise ValueError(f"node {j} must have {j} inputs (from nodes 0..{j - 1}), got {len(inputs)} in {node!r}")
            for i, item in enumerate(inputs):
                op, sep, source = item.partition("~")
                if not sep or source != str(i):
                    raise ValueError(f"input {i} of node {j} must be written 'op~{i}', got {item!r} in {arch_str!r}")
                ops.append(op)
        return cls(tuple(ops))

    @classmethod
    def parse(cls, arch: "str | NB201Cell") -> "NB201Cell":
        """An :class:`NB201Cell` from either a cell or its benchmark string."""
        if isinstance(arch, NB201Cell):
            return arch
        if isinstance(arch, str):
            return cls.from_str(arch)
        raise TypeError(f"arch must be an NB201Cell or a benchmark string, got {type(arch).__name__}")

    @property
    def nodes(self) -> Tuple[Tuple[Tuple[str, int], ...], ...]:
        """Per node 1..3, its (op, input node) pairs (the shape of AutoDL's ``Structure``)."""
        return tuple(tuple((op, i) for op, (to, i) in zip(self.ops, EDGES) if to == j) for j in range(1, NUM_NODES))

    def tostr(self) -> str:
        return "+".join("|" + "|".join(f"{op}~{i}" for op, i in node) + "|" for node in self.nodes)

    def __str__(self) -> str:
        return self.tostr()

    def __repr__(self) -> str:
        return f"NB201Cell.from_str({self.tostr()!r})"
