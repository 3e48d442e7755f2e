"""NAS-Bench-201 ground truth straight from the benchmark's own API, instead of the CSV table.

:class:`BenchmarkAPILookup` answers ``lookup(arch)`` like :meth:`NB201Table.lookup
<sdarts.spaces.nb201.table.NB201Table.lookup>` (``index``, ``arch_str`` and the six
:data:`~sdarts.spaces.nb201.table.ACCURACY_COLUMNS`, in percent), by asking an API object of
``nats_bench`` (``create(path, 'tss')``) or of the older ``nas_201_api`` (``NASBench201API(path)``).

The paper-table convention, as the CSV's columns are defined (data README, ``table.py``):
200-epoch training (``hp='200'``; ``use_12epochs_result=False`` in nas_201_api before 2.0),
averaged over the benchmark's seeds (``is_random=False``).  Both are always passed: the APIs
default to one random seed, and nats_bench and nas_201_api 2.0 to the 12-epoch budget.  Columns, from ``get_more_info(index, dataset)``:

=================  ==================  ===================  ==========================================
column             dataset             key                  split the API reads
=================  ==================  ===================  ==========================================
cifar10_valid      ``cifar10-valid``   ``valid-accuracy``   x-valid: trained on 25k, scored on the other 25k
cifar10_test       ``cifar10``         ``test-accuracy``    ori-test: trained on all 50k, the 10k test set
cifar100_valid     ``cifar100``        ``valid-accuracy``   x-valid: half of the test set (5k)
cifar100_test      ``cifar100``        ``test-accuracy``    x-test: the other half (5k)
imagenet16_valid   ``ImageNet16-120``  ``valid-accuracy``   x-valid (3k)
imagenet16_test    ``ImageNet16-120``  ``test-accuracy``    x-test (3k)
=================  ==================  ===================  ==========================================
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any, Callable, Dict, Tuple, Union

from .genotype import NB201Cell
from .table import API_COLUMNS, CellNotInTable

# API_COLUMNS: our column -> (API dataset, get_more_info key), one mapping for both API paths;
# see the module docstring for the splits.
API_CHOICES = ("auto", "nats_bench", "nas_201_api")
_PIP_NAMES = {"nats_bench": "nats_bench", "nas_201_api": "nas-bench-201"}

Row = Dict[str, Union[int, float, str]]


class BenchmarkAPILookup:
    """Cell -> its benchmark row, asked of a NATS-Bench / NAS-Bench-201 API object.

    ``BenchmarkAPILookup(api_object)`` wraps an API already built (anything with
    ``query_index_by_arch`` and ``get_more_info``); :meth:`from_file` builds one.
    """

    def __init__(self, api: Any, source: str = "<API object>"):
        self.api = api
        self.source = source
        self.info_kwargs = _epoch_kwargs(api.get_more_info)
        self._rows: Dict[NB201Cell, Row] = {}  # the search asks for the same cell epoch after epoch

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike], api: str = "auto") -> "BenchmarkAPILookup":
        """Open the benchmark at ``path`` with ``api``: ``"nats_bench"`` (a NATS-tss-v1_0-3ffb9
        archive: the ``-simple`` directory, read lazily, or the ``.pickle.pbz2`` file),
        ``"nas_201_api"`` (``NAS-Bench-201-v1_*.pth``) or ``"auto"`` (whichever is installed,
        nas_201_api first for a ``.pth`` file).  Problems raise a one-line ValueError."""
        if api not in API_CHOICES:
            raise ValueError(f"--benchmark-api must be one of {', '.join(API_CHOICES)}, got {api!r}")
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ValueError(
                f"--benchmark-file {path}: no such file or directory (a NATS-Bench topology archive such as "
                "NATS-tss-v1_0-3ffb9-simple/, or NAS-Bench-201-v1_*.pth)"
            )
        name, opener = _opener(api, path)
        try:
            obj = opener(path)
        except Exception as err:  # the APIs raise anything from AssertionError to pickle errors
            raise ValueError(f"--benchmark-file {path}: {name} could not open it: {_one_line(err)}") from None
        return cls(obj, source=path)

    def lookup(self, arch: Union[str, NB201Cell]) -> Row:
        """The row of ``arch`` (``index``, ``arch_str``, the columns of :data:`API_COLUMNS`), as a new dict;
        :class:`CellNotInTable` (a LookupError) when the benchmark does not hold the cell."""
        cell = NB201Cell.parse(arch)
        if cell not in self._rows:
            self._rows[cell] = self._query(cell)
        return dict(self._rows[cell])

    def _query(self, cell: NB201Cell) -> Row:
        arch_str = cell.tostr()  # the API matches the official string exactly
        index = int(self.api.query_index_by_arch(arch_str))
        if index < 0:
            raise CellNotInTable(f"cell {arch_str} is not in the NAS-Bench-201 benchmark {self.source}")
        row: Row = {"index": index, "arch_str": arch_str}
        infos: Dict[str, Dict[str, Any]] = {}
        for column, (dataset, key) in API_COLUMNS.items():
            if dataset not in infos:
                infos[dataset] = self.api.get_more_info(index, dataset, is_random=False, **self.info_kwargs)
            if key not in infos[dataset]:
                # Not a LookupError: callers treat those as "cell missing", this is a wrong benchmark file.
                raise ValueError(f"{self.source}: get_more_info({index}, {dataset!r}) has no {key!r} (has {sorted(infos[dataset])})")
            row[column] = float(infos[dataset][key])
        return row


def _epoch_kwargs(get_more_info: Callable[..., Any]) -> Dict[str, Any]:
    """The 200-epoch flag in the API's own spelling (nas_201_api 1.x predates ``hp``)."""
    try:
        params = inspect.signature(get_more_info).parameters
    except (TypeError, ValueError):
        return {"hp": "200"}
    if "hp" not in params and "use_12epochs_result" in params:
        return {"use_12epochs_result": False}
    return {"hp": "200"}


def _opener(api: str, path: str) -> Tuple[str, Callable[[str], Any]]:
    """(package name, path -> API object) for ``api``, importing the package only now."""
    if api == "auto":
        order = ("nas_201_api", "nats_bench") if path.endswith(".pth") else ("nats_bench", "nas_201_api")
    else:
        order = (api,)
    for name in order:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if name == "nats_bench":
            # fast_mode reads a directory archive lazily; a single file needs fast_mode=False.
            return name, lambda p: module.create(p, "tss", fast_mode=os.path.isdir(p), verbose=False)
        cls = getattr(module, "NASBench201API", None) or getattr(module, "API")
        return name, lambda p: cls(p, verbose=False)
    if api == "auto":
        raise ValueError(
            "--benchmark-api auto: neither nats_bench nor nas_201_api is installed (pip install nats_bench), "
            "or look cells up in the CSV table with --nb201-table"
        )
    raise ValueError(f"--benchmark-api {api} needs the {api} package, which is not installed (pip install {_PIP_NAMES[api]})")


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
