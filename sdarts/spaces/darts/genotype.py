"""DARTS genotypes: the value type, derivation from p, printing/parsing, and published cells.

A :class:`Genotype` prints exactly as the DARTS code bases print theirs::

    Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])

and :func:`parse_genotype` reads that text back (with :mod:`ast`, never ``eval``), as well as
the JSON form of :func:`genotype_to_json`, a file holding either, or a name from
:data:`GENOTYPES`.  Each cell is a list of ``(op, input)`` pairs, two per intermediate node;
input 0 and 1 are the cell's two inputs, input ``2 + i`` is intermediate node ``i``.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections import namedtuple
from typing import Dict, List, Sequence, Tuple, Union

import torch

from ...primitives import DARTS, PrimitiveSet

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")

Cell = List[Tuple[str, int]]


def derive_cell(p: torch.Tensor, steps: int, primitives: PrimitiveSet = DARTS, inputs_per_node: int = 2) -> Cell:
    """The discrete cell of DARTS from one cell type's p (num_edges x num_ops).

    For every intermediate node, keep the ``inputs_per_node`` incoming edges with the largest
    strength (max p over the ops other than ``none``), each with its strongest op other than
    ``none``.  Ties go to the lower index, as in the original code's stable sort.
    """
    num_edges = steps * (steps + 3) // 2
    if p.dim() != 2 or p.shape != (num_edges, len(primitives)):
        raise ValueError(f"p must have shape ({num_edges}, {len(primitives)}) for {steps} steps, got {tuple(p.shape)}")
    p = p.detach().cpu().double()
    if "none" in primitives.names:
        p[:, primitives.index("none")] = float("-inf")
    gene: Cell = []
    start = 0
    for node in range(steps):
        incoming = p[start : start + node + 2]
        strength = incoming.max(dim=1).values.tolist()
        chosen = sorted(range(node + 2), key=lambda j: -strength[j])[:inputs_per_node]
        for j in chosen:
            gene.append((primitives.names[int(torch.argmax(incoming[j]))], j))
        start += node + 2
    return gene


def derive_genotype(p_normal: torch.Tensor, p_reduce: torch.Tensor, steps: int = 4, multiplier: int = 4,
                    primitives: PrimitiveSet = DARTS) -> Genotype:
    """The genotype of a DARTS supernet from its normal and reduction p."""
    concat = list(range(2 + steps - multiplier, steps + 2))
    return Genotype(
        normal=derive_cell(p_normal, steps, primitives), normal_concat=concat,
        reduce=derive_cell(p_reduce, steps, primitives), reduce_concat=list(concat),
    )


def _check_cell(cell, concat, which: str, known: Sequence[str]) -> Tuple[Cell, List[int]]:
    try:
        cell = [(str(op), int(index)) for op, index in cell]
        concat = [int(i) for i in concat]
    except (TypeError, ValueError) as err:
        raise ValueError(f"genotype {which}: expected a list of (op, input) pairs and a list of ints ({err})") from None
    if not cell or len(cell) % 2:
        raise ValueError(f"genotype {which}: needs two (op, input) pairs per node, got {len(cell)} pairs")
    steps = len(cell) // 2
    for k, (op, index) in enumerate(cell):
        if op not in known:
            raise ValueError(f"genotype {which}: unknown op {op!r}; known: {sorted(known)}")
        if not 0 <= index < 2 + k // 2:
            raise ValueError(f"genotype {which}: node {k // 2} cannot take input {index} (valid: 0..{1 + k // 2})")
    if not concat or any(not 0 <= i < 2 + steps for i in concat):
        raise ValueError(f"genotype {which}_concat: {concat} must name states 0..{1 + steps}")
    return cell, concat


def validate_genotype(genotype, primitives: PrimitiveSet = DARTS) -> Genotype:
    """``genotype`` as a :class:`Genotype` of plain lists; ValueError naming what is wrong."""
    if not (isinstance(genotype, tuple) and hasattr(genotype, "_fields") and genotype._fields == Genotype._fields):
        raise TypeError(f"genotype must be a Genotype(normal, normal_concat, reduce, reduce_concat), got {type(genotype).__name__}")
    known = list(primitives.builders)
    normal, normal_concat = _check_cell(genotype.normal, genotype.normal_concat, "normal", known)
    reduce, reduce_concat = _check_cell(genotype.reduce, genotype.reduce_concat, "reduce", known)
    return Genotype(normal, normal_concat, reduce, reduce_concat)


def genotype_to_json(genotype: Genotype) -> Dict[str, list]:
    """A JSON-ready dict: cells as lists of [op, input] pairs."""
    g = validate_genotype(genotype)
    return {
        "normal": [[op, i] for op, i in g.normal], "normal_concat": g.normal_concat,
        "reduce": [[op, i] for op, i in g.reduce], "reduce_concat": g.reduce_concat,
    }


def genotype_from_json(data: Union[dict, str]) -> Genotype:
    """The inverse of :func:`genotype_to_json` (a dict, or its JSON text)."""
    if isinstance(data, str):
        data = json.loads(data)
    if not isinstance(data, dict):
        raise TypeError(f"genotype JSON must be an object, got {type(data).__name__}")
    missing = [f for f in Genotype._fields if f not in data]
    if missing:
        raise ValueError(f"genotype JSON lacks {missing}; it needs {list(Genotype._fields)}")
    return validate_genotype(Genotype(*(data[f] for f in Genotype._fields)))


def _literal(node: ast.AST):
    # range(a, b) is how several DARTS code bases write concat; everything else must be a literal.
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" and not node.keywords:
        return list(range(*(ast.literal_eval(a) for a in node.args)))
    return ast.literal_eval(node)


def _genotype_from_repr(text: str) -> Genotype:
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as err:
        raise ValueError(f"cannot parse genotype text {text[:80]!r}: {err.msg}") from None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, (ast.Name, ast.Attribute))):
        raise ValueError(f"genotype text must be a Genotype(...) call, got {text[:80]!r}")
    name = tree.func.id if isinstance(tree.func, ast.Name) else tree.func.attr
    if name != "Genotype":
        raise ValueError(f"genotype text must be a Genotype(...) call, got {name}(...)")
    try:
        fields = dict(zip(Genotype._fields, (_literal(a) for a in tree.args)))
        for kw in tree.keywords:
            if kw.arg not in Genotype._fields:
                raise ValueError(f"unknown Genotype field {kw.arg!r}")
            fields[kw.arg] = _literal(kw.value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"cannot parse genotype text: {err}") from None
    return genotype_from_json(fields)


# An NB201 cell as sdarts-search --space nb201 writes it: |op~0|+|op~0|op~1|+|op~0|op~1|op~2|
_NB201_CELL = re.compile(r"^\|(?:\w+~\d+\|)+(?:\+\|(?:\w+~\d+\|)+)*$")


def _not_darts(source: str, space: str) -> ValueError:
    if space == "nb201":
        return ValueError(f"{source} is an NB201 cell, not a DARTS genotype: sdarts-train retrains DARTS-space genotypes "
                          "only (an NB201 cell is not retrained; its accuracy is looked up in the NAS-Bench-201 table, "
                          "sdarts-search --nb201-table)")
    return ValueError(f"{source} is a genotype of the {space!r} space, not a DARTS genotype")


def _show(text: str) -> str:
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def parse_genotype(spec: Union[str, os.PathLike, dict, Genotype]) -> Genotype:
    """A genotype from a name in :data:`GENOTYPES`, a ``Genotype(...)`` string, JSON text or
    dict, or the path of a file holding the string or the JSON (a JSON object with a
    ``"genotype"`` entry, such as a search's result file, works too).

    ValueError, saying what was expected, for anything else (an NB201 cell included)."""
    return _parse(spec, None)


def _parse(spec, source) -> Genotype:
    if isinstance(spec, tuple):
        return validate_genotype(spec)
    if isinstance(spec, dict):
        where = source or "genotype JSON"
        space = spec.get("space")
        if space is not None and space != "darts":
            raise _not_darts(where, str(space))
        if "genotype" in spec:
            inner = spec["genotype"]
            if not isinstance(inner, (str, dict)):
                raise ValueError(f"{where}: \"genotype\" must be a DARTS genotype (an object with {list(Genotype._fields)}, "
                                 f"or Genotype(...) text or a name), got {type(inner).__name__} {inner!r:.60}")
            if isinstance(inner, str) and _NB201_CELL.match(inner.strip()):
                raise _not_darts(where, "nb201")
            return _parse(inner, source)
        return genotype_from_json(spec)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"genotype must be a name, text, dict, path or Genotype, got {type(spec).__name__}")
    text = os.fspath(spec)
    if text in GENOTYPES:
        return GENOTYPES[text]
    if os.path.isdir(text):
        raise ValueError(f"{text} is a directory; expected a genotype file "
                         f"(such as a search's {os.path.join(text, 'genotype.json')}), "
                         f"Genotype(...) text, JSON, or one of {sorted(GENOTYPES)}")
    if os.path.isfile(text):
        source = text
        try:
            with open(text) as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read the genotype file {source} ({getattr(err, 'strerror', None) or err})") from None
    text = text.strip()
    where = source or "genotype JSON"
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ValueError(f"{source or 'the genotype text'} is not valid JSON ({err})") from None
        return _parse(data, source)
    if text.startswith("["):
        raise ValueError(f"{where}: expected a JSON object with {list(Genotype._fields)}, got a list")
    if _NB201_CELL.match(text):
        raise _not_darts(source or f"genotype {_show(text)}", "nb201")
    if "Genotype(" in text:
        return _genotype_from_repr(text)
    if source:
        raise ValueError(f"the genotype file {source} holds neither Genotype(...) text nor JSON (it starts {_show(text)})")
    raise ValueError(f"genotype {_show(text)} is neither a file, Genotype(...) text, JSON, nor one of {sorted(GENOTYPES)}")


# Published cells, copied from the authors' genotypes.py (quark0/darts, yuhuixu1993/PC-DARTS,
# chenxin061/pdarts).  V1: first-order DARTS; V2: second-order DARTS (the paper's "DARTS").
DARTS_V1 = Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])  # noqa: E501
DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])  # noqa: E501
# PC-DARTS searched on CIFAR-10 (the repo's PC_DARTS_cifar) and directly on ImageNet (PC_DARTS_image).
PC_DARTS = Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], normal_concat=[2, 3, 4, 5], reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2), ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], reduce_concat=[2, 3, 4, 5])  # noqa: E501
PC_DARTS_IMAGENET = Genotype(normal=[('skip_connect', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('dil_conv_5x5', 4)], normal_concat=[2, 3, 4, 5], reduce=[('sep_conv_3x3', 0), ('skip_connect', 1), ('dil_conv_5x5', 2), ('max_pool_3x3', 1), ('sep_conv_3x3', 2), ('sep_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 3)], reduce_concat=[2, 3, 4, 5])  # noqa: E501
PDARTS = Genotype(normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 0), ('dil_conv_5x5', 4)], normal_concat=[2, 3, 4, 5], reduce=[('avg_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 2), ('max_pool_3x3', 0), ('dil_conv_3x3', 1), ('dil_conv_3x3', 1), ('dil_conv_5x5', 3)], reduce_concat=[2, 3, 4, 5])  # noqa: E501

GENOTYPES: Dict[str, Genotype] = {
    "DARTS_V1": DARTS_V1,
    "DARTS_V2": DARTS_V2,
    "PC_DARTS": PC_DARTS,
    "PC_DARTS_IMAGENET": PC_DARTS_IMAGENET,
    "PDARTS": PDARTS,
}
