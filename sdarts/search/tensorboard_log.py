"""Optional TensorBoard view of the search: one step per epoch record of the search loop.

Tags (step = the record's 1-based ``epoch``):

- ``loss/train``, ``loss/valid``, ``acc/train``, ``acc/valid`` (percent), ``lr``
- ``benchmark/<column>``: the benchmark accuracies of the epoch's cell, when the record has them
- ``p/<alpha>/<edge>/<op>`` and ``dLdp/<alpha>/<edge>/<op>``: per edge and candidate op
- text ``genotype``: the derived cell, as inline code

Values the record lacks (None: a non-finite loss, no dL/dp yet, no benchmark row) are skipped,
not written as 0, so the curves show gaps instead of false points.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

MISSING_TENSORBOARD = "--tensorboard needs the tensorboard package (pip install tensorboard)"

# (tag, key of the epoch record)
_SCALARS: Tuple[Tuple[str, str], ...] = (
    ("loss/train", "train_loss"),
    ("loss/valid", "valid_loss"),
    ("acc/train", "train_acc"),
    ("acc/valid", "valid_acc"),
    ("lr", "lr"),
)


def _summary_writer_class() -> type:
    try:
        # torch.utils.tensorboard imports the tensorboard package (and checks its version).
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError(MISSING_TENSORBOARD) from None
    return SummaryWriter


def tensorboard_available() -> bool:
    """Whether ``torch.utils.tensorboard.SummaryWriter`` can be used here."""
    try:
        _summary_writer_class()
    except ValueError:
        return False
    return True


class TensorBoardLogger:
    """Writes epoch records to a TensorBoard log directory.

    ``edge_names``: per alpha, the label of each of its rows (``SearchSpace.edges``);
    ``op_names``: the candidate ops, in column order.  ``writer``: anything with
    ``add_scalar``/``add_text``/``flush``/``close`` (default: a ``SummaryWriter(log_dir)``).
    """

    def __init__(
        self,
        log_dir: Union[str, os.PathLike],
        edge_names: Mapping[str, Sequence[str]],
        op_names: Sequence[str],
        writer: Optional[Any] = None,
    ):
        self.edge_names: Dict[str, Tuple[str, ...]] = {alpha: tuple(edges) for alpha, edges in edge_names.items()}
        self.op_names: Tuple[str, ...] = tuple(op_names)
        self.writer = writer if writer is not None else _summary_writer_class()(log_dir=os.fspath(log_dir))
        self._closed = False

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        step = int(record["epoch"])
        for tag, key in _SCALARS:
            self._scalar(tag, record.get(key), step)
        for column, value in (record.get("benchmark") or {}).items():
            if column != "index":  # an identifier, not a curve; the genotype text names the cell
                self._scalar(f"benchmark/{column}", value, step)
        self._per_edge("p", record.get("p"), step)
        self._per_edge("dLdp", record.get("dL_dp"), step)
        if record.get("genotype") is not None:
            # Inline code: TensorBoard renders text as Markdown, which would eat '|', '~' and '_'.
            self.writer.add_text("genotype", f"`{record['genotype']}`", step)
        self.writer.flush()  # so a TensorBoard watching the run sees each epoch as it ends

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.writer.close()

    def __enter__(self) -> "TensorBoardLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        if value is not None:
            self.writer.add_scalar(tag, float(value), step)

    def _per_edge(self, prefix: str, values: Optional[Mapping[str, Any]], step: int) -> None:
        for alpha, rows in (values or {}).items():
            if rows is None:
                continue
            edges = self.edge_names.get(alpha)
            if edges is None:
                raise ValueError(f"{prefix}: alpha {alpha!r} has no edge names (known: {sorted(self.edge_names)})")
            shape = [len(row) for row in rows]
            if shape != [len(self.op_names)] * len(edges):
                raise ValueError(
                    f"{prefix}[{alpha!r}] has rows of lengths {shape}, expected {len(edges)} edges x {len(self.op_names)} ops"
                )
            for edge, row in zip(edges, rows):
                for op, value in zip(self.op_names, row):
                    self._scalar(f"{prefix}/{alpha}/{edge}/{op}", value, step)
