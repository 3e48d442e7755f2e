"""The files of one search run, and nothing else.

::

    RUN_DIR/config.json     every resolved setting, versions, device and backend
    RUN_DIR/metrics.jsonl   one JSON object per finished epoch
    RUN_DIR/checkpoint.pt   the state after the last finished epoch (written atomically)
    RUN_DIR/genotype.json   the derived architecture, when the search has finished
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable

from .checkpoint import load_checkpoint, save_checkpoint
from .metrics import read_metrics


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class RunDir:
    def __init__(self, path: os.PathLike):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.checkpoint = self.path / "checkpoint.pt"
        self.genotype = self.path / "genotype.json"

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: Dict[str, Any]) -> None:
        _write_text_atomic(self.config, json.dumps(config, indent=2, sort_keys=True) + "\n")

    def read_config(self) -> Dict[str, Any]:
        with open(self.config) as f:
            return json.load(f)

    def append_metrics(self, record: Dict[str, Any]) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")

    def rewrite_metrics(self, records: Iterable[Dict[str, Any]]) -> None:
        """Replace metrics.jsonl by ``records`` (on resume: exactly the checkpoint's epochs)."""
        _write_text_atomic(self.metrics, "".join(json.dumps(r) + "\n" for r in records))

    def read_metrics(self):
        return read_metrics(self.metrics)

    def save_checkpoint(self, state: Dict[str, Any]) -> None:
        save_checkpoint(state, self.checkpoint)

    def load_checkpoint(self) -> Dict[str, Any]:
        return load_checkpoint(self.checkpoint)

    def write_genotype(self, data: Dict[str, Any]) -> None:
        _write_text_atomic(self.genotype, json.dumps(data, indent=2) + "\n")
