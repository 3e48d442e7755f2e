"""BenchmarkAPILookup: NB201 rows asked of the benchmark's API (stand-in objects, no benchmark file)."""

from __future__ import annotations

import os
import sys
import types

import pytest

from sdarts.nb201 import NB201Cell
from sdarts.spaces.nb201 import api as api_module
from sdarts.spaces.nb201.api import API_COLUMNS, BenchmarkAPILookup
from sdarts.spaces.nb201.table import ACCURACY_COLUMNS, REQUIRED_COLUMNS, CellNotInTable, NB201Table, default_table_path

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = NB201Cell.from_ops(["skip_connect"] * 6).tostr()
NOT_HELD = NB201Cell.from_ops(["none"] * 6).tostr()
DECOY = 1000.0  # what the stand-in answers for a wrong epoch budget or a single seed


def _metrics(prefix: str, acc: float) -> dict:
    return {f"{prefix}-loss": 1.0, f"{prefix}-accuracy": acc, f"{prefix}-per-time": 0.1, f"{prefix}-all-time": 20.0}


def api_infos(c10_valid, c10v_test, c10_test, c100, img):
    """Per dataset, what ``get_more_info`` returns: the keys the real API sets for each one.

    cifar10-valid: x-valid as valid, ori-test as test; cifar10: ori-test only; cifar100 and
    ImageNet16-120: x-valid, x-test and ori-test (valtest).  ``c100``/``img``: (valid, test, valtest).
    """
    train = {"train-loss": 0.1, "train-accuracy": 99.0, "train-per-time": 1.0, "train-all-time": 200.0}
    return {
        "cifar10-valid": {**train, **_metrics("valid", c10_valid), **_metrics("test", c10v_test)},
        "cifar10": {**train, **_metrics("test", c10_test)},
        "cifar100": {**train, **_metrics("valid", c100[0]), **_metrics("test", c100[1]), **_metrics("valtest", c100[2])},
        "ImageNet16-120": {**train, **_metrics("valid", img[0]), **_metrics("test", img[1]), **_metrics("valtest", img[2])},
    }


class StandInAPI:
    """The two methods of nats_bench's / nas_201_api's API, with their signatures and defaults."""

    def __init__(self, archs: dict):
        self.archs = archs  # arch_str -> (index, {dataset: info})
        self.by_index = {index: infos for index, infos in archs.values()}
        self.calls = []

    def query_index_by_arch(self, arch):
        return self.archs[arch][0] if arch in self.archs else -1

    def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
        self.calls.append((index, dataset, iepoch, hp, is_random))
        info = dict(self.by_index[index][dataset])
        if hp != "200" or is_random is not False:
            info = {k: DECOY if k.endswith("accuracy") else v for k, v in info.items()}
        return info


class OldStandInAPI(StandInAPI):
    """nas_201_api before 2.0: the epoch budget is ``use_12epochs_result``, not ``hp``."""

    def get_more_info(self, index, dataset, iepoch=None, use_12epochs_result=False, is_random=True):
        return super().get_more_info(index, dataset, iepoch, "12" if use_12epochs_result else "200", is_random)


@pytest.fixture
def stand_in():
    return StandInAPI({
        BEST: (9930, api_infos(91.5, 93.9, 94.3, (73.4, 73.5, 73.45), (46.6, 46.2, 46.4))),
        ALL_SKIP: (1, api_infos(10.0, 11.0, 12.0, (13.0, 14.0, 15.0), (16.0, 17.0, 18.0))),
    })


def test_columns_come_from_the_paper_splits(stand_in):
    row = BenchmarkAPILookup(stand_in).lookup(BEST)
    assert row == {
        "index": 9930, "arch_str": BEST,
        "cifar10_valid": 91.5,  # cifar10-valid's x-valid, not its ori-test (93.9)
        "cifar10_test": 94.3,  # cifar10 (trained on all 50k), ori-test
        "cifar100_valid": 73.4, "cifar100_test": 73.5,  # x-valid / x-test, not valtest
        "imagenet16_valid": 46.6, "imagenet16_test": 46.2,
    }
    assert list(row)[2:] == list(ACCURACY_COLUMNS)
    assert BenchmarkAPILookup(stand_in).lookup(ALL_SKIP)["cifar100_test"] == 14.0


def test_mapping_is_the_tables():
    assert tuple(API_COLUMNS) == ACCURACY_COLUMNS


def test_asks_for_200_epochs_averaged_over_seeds(stand_in):
    BenchmarkAPILookup(stand_in).lookup(BEST)
    assert sorted(stand_in.calls, key=str) == sorted(
        [(9930, d, None, "200", False) for d in ("cifar10-valid", "cifar10", "cifar100", "ImageNet16-120")], key=str
    )  # one call per dataset, never the 12-epoch default nor one random seed


def test_old_nas_201_api_spelling(stand_in):
    old = OldStandInAPI(stand_in.archs)  # shares the infos
    assert BenchmarkAPILookup(old).info_kwargs == {"use_12epochs_result": False}
    assert BenchmarkAPILookup(old).lookup(BEST) == BenchmarkAPILookup(stand_in).lookup(BEST)


def test_any_spelling_of_the_cell_and_cached(stand_in):
    lookup = BenchmarkAPILookup(stand_in)
    row = lookup.lookup(NB201Cell.from_str(BEST))
    assert lookup.lookup(" " + BEST + " ") == row
    assert len(stand_in.calls) == 4  # asked once
    row["cifar10_test"] = -1.0  # a copy
    assert lookup.lookup(BEST)["cifar10_test"] == 94.3


def test_unknown_cell_is_a_lookup_error(stand_in):
    with pytest.raises(LookupError, match="is not in the NAS-Bench-201 benchmark") as err:
        BenchmarkAPILookup(stand_in, source="bench.pth").lookup(NOT_HELD)
    assert isinstance(err.value, CellNotInTable) and "bench.pth" in str(err.value)
    with pytest.raises(ValueError, match="unknown NAS-Bench-201 operation"):
        BenchmarkAPILookup(stand_in).lookup("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")


def test_missing_key_is_not_a_lookup_error(stand_in):
    # A benchmark without the split is a wrong file, not a missing cell the search may skip.
    del stand_in.archs[BEST][1]["cifar100"]["valid-accuracy"]
    with pytest.raises(ValueError, match="has no 'valid-accuracy'") as err:
        BenchmarkAPILookup(stand_in).lookup(BEST)
    assert not isinstance(err.value, LookupError)


# ---- from_file: lazy imports and one-line errors ----------------------------------------------


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.fixture
def no_packages(monkeypatch):
    for name in ("nats_bench", "nas_201_api"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, installed or not


def test_missing_package(tmp_path, no_packages):
    path = tmp_path / "NAS-Bench-201-v1_1-096897.pth"
    path.write_bytes(b"")
    for api, needs in (("nats_bench", "pip install nats_bench"), ("nas_201_api", "pip install nas-bench-201"),
                       ("auto", "pip install nats_bench")):
        with pytest.raises(ValueError) as err:
            BenchmarkAPILookup.from_file(path, api=api)
        assert f"--benchmark-api {api}" in _one_line(err) and needs in str(err.value)


def test_missing_file_and_bad_choice(tmp_path, no_packages):
    with pytest.raises(ValueError) as err:
        BenchmarkAPILookup.from_file(tmp_path / "nowhere.pth")
    assert _one_line(err).startswith("--benchmark-file ") and "no such file or directory" in str(err.value)
    with pytest.raises(ValueError) as err:
        BenchmarkAPILookup.from_file(tmp_path, api="nb201")
    assert _one_line(err).startswith("--benchmark-api must be one of auto, nats_bench, nas_201_api")


def _fake_packages(monkeypatch, stand_in, created):
    nats = types.ModuleType("nats_bench")

    def create(path, space, fast_mode=False, verbose=True):  # nats_bench.create's signature
        created.append(("nats_bench", path, space, fast_mode, verbose))
        return stand_in

    nats.create = create
    nb201 = types.ModuleType("nas_201_api")

    class NASBench201API:
        def __new__(cls, path, verbose=True):
            created.append(("nas_201_api", path, verbose))
            return stand_in

    nb201.NASBench201API = NASBench201API
    monkeypatch.setitem(sys.modules, "nats_bench", nats)
    monkeypatch.setitem(sys.modules, "nas_201_api", nb201)


def test_from_file_opens_with_the_chosen_package(tmp_path, monkeypatch, stand_in):
    created = []
    _fake_packages(monkeypatch, stand_in, created)
    archive = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
    archive.mkdir()
    pbz2 = tmp_path / "NATS-tss-v1_0-3ffb9.pickle.pbz2"
    pth = tmp_path / "NAS-Bench-201-v1_1-096897.pth"
    pbz2.write_bytes(b"")
    pth.write_bytes(b"")

    lookup = BenchmarkAPILookup.from_file(archive)
    assert lookup.lookup(BEST)["cifar10_test"] == 94.3 and lookup.source == str(archive)
    BenchmarkAPILookup.from_file(pbz2, api="nats_bench")
    BenchmarkAPILookup.from_file(pth)  # auto: a .pth is NAS-Bench-201's
    BenchmarkAPILookup.from_file(pth, api="nats_bench")
    assert created == [
        ("nats_bench", str(archive), "tss", True, False),  # a directory is read lazily (fast_mode)
        ("nats_bench", str(pbz2), "tss", False, False),  # a single file needs fast_mode=False
        ("nas_201_api", str(pth), False),
        ("nats_bench", str(pth), "tss", False, False),
    ]

    monkeypatch.setitem(sys.modules, "nas_201_api", None)
    created.clear()
    BenchmarkAPILookup.from_file(pth)  # auto falls back to the package that is installed
    assert created[0][0] == "nats_bench"


def test_api_failure_is_one_line(tmp_path, monkeypatch):
    nats = types.ModuleType("nats_bench")

    def create(path, space, fast_mode=False, verbose=True):
        raise AssertionError("invalid path : x\nsecond line")

    nats.create = create
    monkeypatch.setitem(sys.modules, "nats_bench", nats)
    with pytest.raises(ValueError) as err:
        BenchmarkAPILookup.from_file(tmp_path)
    assert _one_line(err) == f"--benchmark-file {tmp_path}: nats_bench could not open it: AssertionError: invalid path : x"


def test_module_imports_no_benchmark_package():
    assert not {"nats_bench", "nas_201_api"} & set(vars(api_module))


# ---- against the project's CSV table ------------------------------------------------------------


def _table_stand_in(table: NB201Table) -> StandInAPI:
    """A stand-in API that answers from the table's own rows, in the API's dict shapes."""
    archs = {}
    for cell in table:
        row = table.lookup(cell)
        c100 = (row["cifar100_valid"], row["cifar100_test"], row.get("cifar100_valtest", -3.0))
        img = (row["imagenet16_valid"], row["imagenet16_test"], row.get("imagenet16_valtest", -3.0))
        archs[row["arch_str"]] = (row["index"], api_infos(row["cifar10_valid"], -2.0, row["cifar10_test"], c100, img))
    return StandInAPI(archs)


def test_same_rows_as_the_csv_table():
    path = default_table_path()
    if not os.path.isfile(path):
        pytest.skip(f"the NAS-Bench-201 CSV table is not at {path} (set SDARTS_DATA to the shared data folder)")
    table = NB201Table.from_csv(path)
    lookup = BenchmarkAPILookup(_table_stand_in(table), source=path)
    for cell in table:
        expected = {c: table.lookup(cell)[c] for c in REQUIRED_COLUMNS}
        assert lookup.lookup(cell) == expected
