"""NAS-Bench-201 ground truth: look a searched cell up in the benchmark's accuracy table.

The table is read from a CSV with one row per cell (``arch_str``, ``index`` and accuracy
columns, in percent), e.g. ``nb201/nb201_200ep_accuracies.csv`` of the project's shared data,
or built from the official API file when ``nats_bench`` (or the older ``nas_201_api``) is
installed.  Cells are keyed by their canonical :class:`~sdarts.spaces.nb201.genotype.NB201Cell`,
so any spelling that parses to the same cell finds the same row.
"""

from __future__ import annotations

import csv
import inspect
import os
from typing import Dict, Iterator, List, Union

from ...data.locate import shared_data_dir
from .genotype import NB201Cell

ACCURACY_COLUMNS = (
    "cifar10_valid",
    "cifar10_test",
    "cifar100_valid",
    "cifar100_test",
    "imagenet16_valid",
    "imagenet16_test",
)
REQUIRED_COLUMNS = ("arch_str", "index") + ACCURACY_COLUMNS

# Our column -> (API dataset name, key of get_more_info), as the benchmark defines the splits.
API_COLUMNS = {
    "cifar10_valid": ("cifar10-valid", "valid-accuracy"),
    "cifar10_test": ("cifar10", "test-accuracy"),
    "cifar100_valid": ("cifar100", "valid-accuracy"),
    "cifar100_test": ("cifar100", "test-accuracy"),
    "imagenet16_valid": ("ImageNet16-120", "valid-accuracy"),
    "imagenet16_test": ("ImageNet16-120", "test-accuracy"),
}

Row = Dict[str, Union[int, float, str]]


class CellNotInTable(KeyError):
    """The cell is a valid NB201 cell but has no row in this table."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class NB201Table:
    """Accuracies of NAS-Bench-201 cells, keyed by cell.

    ``lookup(arch)`` returns the row of a cell (``index``, ``arch_str``, the six
    :data:`ACCURACY_COLUMNS` and whatever other numeric columns the source had).
    """

    def __init__(self, rows: List[Row], source: str = "<memory>"):
        self.source = source
        self._rows: Dict[NB201Cell, Row] = {}
        for row in rows:
            self._rows[NB201Cell.from_str(str(row["arch_str"]))] = row
        self.columns = tuple(rows[0].keys()) if rows else REQUIRED_COLUMNS

    @classmethod
    def from_csv(cls, path: Union[str, os.PathLike]) -> "NB201Table":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"path={path!r}: no such NAS-Bench-201 table (a CSV with columns {', '.join(REQUIRED_COLUMNS)})")
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            try:
                fieldnames = reader.fieldnames or []
                if any("\x00" in name for name in fieldnames):
                    raise ValueError(f"{path}: {_NOT_TEXT}: its header holds NUL bytes")
                missing = [c for c in REQUIRED_COLUMNS if c not in fieldnames]
                if missing:
                    raise ValueError(f"{path}: the table lacks the column(s) {missing} (has {_short(fieldnames)})")
                rows = [_typed(row, path, line) for line, row in enumerate(reader, start=2)]
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}: {_NOT_TEXT}: it holds byte 0x{err.object[err.start]:02x}, which is not UTF-8 text") from None
            except csv.Error as err:
                raise ValueError(f"{path}, line {reader.line_num}: {_NOT_TEXT}: {err}") from None
        if not rows:
            raise ValueError(f"{path}: the table has a header but no rows")
        return cls(rows, source=path)

    @classmethod
    def from_api(cls, path: Union[str, os.PathLike]) -> "NB201Table":
        """Build the table from the benchmark's API file (200-epoch results, averaged over seeds).

        Needs ``nats_bench`` (NATS-Bench topology file, e.g. ``NATS-tss-v1_0-3ffb9-simple``) or
        ``nas_201_api`` (``NAS-Bench-201-v1_*.pth``).  Querying all 15,625 cells takes a while;
        save the result with :meth:`to_csv` and use :meth:`from_csv` afterwards.
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"path={path!r}: no such NAS-Bench-201 / NATS-Bench API file or directory")
        api = _open_api(path)
        info_kwargs = {"hp": "200"} if "hp" in inspect.signature(api.get_more_info).parameters else {"use_12epochs_result": False}
        rows = []
        for index in range(len(api)):
            row: Row = {"index": index, "arch_str": NB201Cell.from_str(api.arch(index)).tostr()}
            infos = {}
            for column, (dataset, key) in API_COLUMNS.items():
                if dataset not in infos:
                    infos[dataset] = api.get_more_info(index, dataset, is_random=False, **info_kwargs)
                row[column] = float(infos[dataset][key])
            rows.append(row)
        return cls(rows, source=path)

    def to_csv(self, path: Union[str, os.PathLike]) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.columns))
            writer.writeheader()
            writer.writerows(sorted(self._rows.values(), key=lambda row: row["index"]))

    def lookup(self, arch: Union[str, NB201Cell]) -> Row:
        """The row of ``arch`` (an :class:`NB201Cell` or a benchmark string), as a new dict."""
        cell = NB201Cell.parse(arch)
        try:
            return dict(self._rows[cell])
        except KeyError:
            raise CellNotInTable(f"cell {cell.tostr()} is not in the NAS-Bench-201 table {self.source} ({len(self)} cells)") from None

    def best(self, column: str = "cifar10_test") -> Row:
        """The row with the highest value of ``column``."""
        first = next(iter(self._rows.values()), {})
        numeric = [c for c in self.columns if isinstance(first.get(c), (int, float))]
        if column not in numeric:
            raise ValueError(f"column must be one of {numeric}, got {column!r}")
        return dict(max(self._rows.values(), key=lambda row: row[column]))

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, arch) -> bool:
        return NB201Cell.parse(arch) in self._rows

    def __iter__(self) -> Iterator[NB201Cell]:
        return iter(self._rows)


_NOT_TEXT = f"not a text CSV table (one row per cell, with columns {', '.join(REQUIRED_COLUMNS)})"


def _short(names: List[str], limit: int = 200) -> str:
    text = repr(names)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _typed(row: Dict[str, str], path: str, line: int) -> Row:
    """CSV strings to int (index) and float (accuracies; other columns when they parse)."""
    out: Row = {}
    for key, value in row.items():
        if key == "arch_str":
            out[key] = value
            continue
        try:
            out[key] = int(value) if key == "index" else float(value)
        except (TypeError, ValueError):
            if key in REQUIRED_COLUMNS:
                raise ValueError(f"{path}, line {line}: column {key!r} holds {value!r}, not a number") from None
            out[key] = value
    return out


def _open_api(path: str):
    """The benchmark API object for ``path``, from nats_bench or nas_201_api, whichever is installed."""
    try:
        from nats_bench import create
    except ImportError:
        create = None
    if create is not None:
        return create(path, "tss", fast_mode=True, verbose=False)
    try:
        from nas_201_api import NASBench201API
    except ImportError:
        raise ImportError(
            "NB201Table.from_api needs the `nats_bench` (or `nas_201_api`) package, which is not installed; "
            "use NB201Table.from_csv with a CSV of the benchmark's accuracies instead "
            "(e.g. <data>/nb201/nb201_200ep_accuracies.csv)"
        ) from None
    return NASBench201API(path, verbose=False)


def default_table_path() -> str:
    """The shared data's NB201 CSV (``$SDARTS_DATA/nb201/...``, else ``<repo>/../shared/data/nb201/...``)."""
    return os.path.join(shared_data_dir(), "nb201", "nb201_200ep_accuracies.csv")
