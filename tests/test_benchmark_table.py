"""NB201Table: reading the benchmark's accuracies and looking cells up."""

import csv
import sys
import types

import pytest

from sdarts.spaces.nb201.table import ACCURACY_COLUMNS, REQUIRED_COLUMNS, CellNotInTable, NB201Table
from sdarts.nb201 import NB201Cell

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = NB201Cell.from_ops(["skip_connect"] * 6)
CELLS = [NB201Cell.from_str(BEST), ALL_SKIP, NB201Cell.from_ops(["nor_conv_1x1", "none", "avg_pool_3x3"] * 2)]


def write_table(path, columns=REQUIRED_COLUMNS, cells=CELLS, value=lambda i, c: 10.0 * i + ACCURACY_COLUMNS.index(c)):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for i, cell in enumerate(cells):
            row = {"index": 100 + i, "arch_str": cell.tostr(), "note": f"row {i}"}
            row.update({c: value(i, c) for c in ACCURACY_COLUMNS})
            writer.writerow({c: row[c] for c in columns})
    return path


@pytest.fixture
def small_table(tmp_path):
    return NB201Table.from_csv(write_table(tmp_path / "t.csv", columns=REQUIRED_COLUMNS + ("note",)))


def test_lookup_by_cell_or_string(small_table):
    row = small_table.lookup(BEST)
    assert row == small_table.lookup(NB201Cell.from_str(BEST))
    assert row["index"] == 100 and row["arch_str"] == BEST
    assert [row[c] for c in ACCURACY_COLUMNS] == [float(k) for k in range(6)]
    assert small_table.lookup(ALL_SKIP)["cifar10_test"] == 11.0
    assert row["note"] == "row 0"  # extra columns come along
    row["cifar10_test"] = -1  # a copy: the table is not changed
    assert small_table.lookup(BEST)["cifar10_test"] == 1.0
    assert len(small_table) == 3 and ALL_SKIP in small_table and set(small_table) == set(CELLS)


def test_missing_cell_is_a_clear_key_error(small_table):
    absent = NB201Cell.from_ops(["none"] * 6)
    with pytest.raises(CellNotInTable) as err:
        small_table.lookup(absent)
    assert isinstance(err.value, KeyError) and isinstance(err.value, LookupError)
    assert str(err.value).startswith(f"cell {absent.tostr()} is not in the NAS-Bench-201 table")
    assert absent not in small_table


def test_malformed_arch_is_a_value_error(small_table):
    with pytest.raises(ValueError, match="3 nodes"):
        small_table.lookup("|nor_conv_3x3~0|")
    with pytest.raises(TypeError):
        small_table.lookup(3)


def test_best(small_table):
    assert small_table.best("cifar10_test")["arch_str"] == CELLS[2].tostr()
    assert small_table.best()["index"] == 102
    with pytest.raises(ValueError, match="column must be one of"):
        small_table.best("cifar10_tset")
    with pytest.raises(ValueError, match="column must be one of"):
        small_table.best("note")


def test_missing_columns_are_named(tmp_path):
    path = write_table(tmp_path / "t.csv", columns=("index", "arch_str", "cifar10_test"))
    with pytest.raises(ValueError, match="lacks the column") as err:
        NB201Table.from_csv(path)
    for column in set(ACCURACY_COLUMNS) - {"cifar10_test"}:
        assert column in str(err.value)


def test_non_numeric_accuracy_names_its_line(tmp_path):
    path = write_table(tmp_path / "t.csv", value=lambda i, c: "n/a" if i == 1 and c == "imagenet16_valid" else 1.0)
    with pytest.raises(ValueError, match=r"line 3: column 'imagenet16_valid' holds 'n/a'"):
        NB201Table.from_csv(path)


def test_missing_file_and_empty_table(tmp_path):
    with pytest.raises(FileNotFoundError, match="path="):
        NB201Table.from_csv(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="no rows"):
        NB201Table.from_csv(write_table(tmp_path / "empty.csv", cells=[]))


def test_to_csv_round_trips(small_table, tmp_path):
    small_table.to_csv(tmp_path / "copy.csv")
    copy = NB201Table.from_csv(tmp_path / "copy.csv")
    assert copy.columns == small_table.columns
    assert all(copy.lookup(cell) == small_table.lookup(cell) for cell in CELLS)


def test_from_api_without_the_package_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nats_bench", None)
    monkeypatch.setitem(sys.modules, "nas_201_api", None)
    (tmp_path / "api.pth").write_bytes(b"")
    with pytest.raises(ImportError, match="from_csv"):
        NB201Table.from_api(tmp_path / "api.pth")
    with pytest.raises(FileNotFoundError):
        NB201Table.from_api(tmp_path / "absent.pth")


def test_from_api_reads_the_benchmark_splits(tmp_path, monkeypatch):
    """The API's dataset/key per column: x-valid vs test sets as NATS-Bench names them."""
    calls = []

    class FakeAPI:
        def __len__(self):
            return len(CELLS)

        def arch(self, index):
            return CELLS[index].tostr()

        def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
            calls.append((dataset, hp, is_random))
            base = {"cifar10-valid": 1, "cifar10": 2, "cifar100": 3, "ImageNet16-120": 4}[dataset]
            return {"valid-accuracy": 10 * base + index, "test-accuracy": 100 * base + index}

    fake = types.ModuleType("nats_bench")
    fake.create = lambda path, space, fast_mode, verbose: FakeAPI()
    monkeypatch.setitem(sys.modules, "nats_bench", fake)
    (tmp_path / "NATS-tss").mkdir()
    table = NB201Table.from_api(tmp_path / "NATS-tss")
    row = table.lookup(CELLS[1])
    assert row["index"] == 1
    assert [row[c] for c in ACCURACY_COLUMNS] == [11.0, 201.0, 31.0, 301.0, 41.0, 401.0]
    assert set(calls) == {(d, "200", False) for d in ("cifar10-valid", "cifar10", "cifar100", "ImageNet16-120")}
    assert len(calls) == 4 * len(CELLS)


# ----------------------------------------------------------------------------- the real table


@pytest.fixture(scope="module")
def benchmark(request):
    from sdarts.nb201 import default_table_path

    path = default_table_path()
    try:
        return NB201Table.from_csv(path)
    except FileNotFoundError:
        pytest.skip(f"NB201 table not found at {path} (set SDARTS_DATA)")


def test_real_table_known_values(benchmark):
    assert len(benchmark) == 15625
    best = benchmark.best("cifar10_test")
    assert best["index"] == 6111 and best["cifar10_test"] == pytest.approx(94.373, abs=1e-3)
    row = benchmark.lookup(BEST)
    assert row["index"] == 9930
    assert row["cifar10_test"] == pytest.approx(94.363, abs=1e-3)
    assert row["cifar100_test"] == pytest.approx(73.513, abs=1e-3)
    assert benchmark.best("cifar100_test")["index"] == 9930
    best16 = benchmark.best("imagenet16_test")
    assert best16["index"] == 857 and best16["imagenet16_test"] == pytest.approx(47.311, abs=1e-3)
    assert benchmark.lookup(ALL_SKIP)["cifar10_test"] == pytest.approx(54.297, abs=1e-3)


def test_real_table_strings_are_canonical(benchmark):
    # Every official string parses and prints back unchanged, so lookups by our cells hit.
    assert all(benchmark.lookup(cell)["arch_str"] == cell.tostr() for cell in benchmark)
    assert sorted(benchmark.lookup(cell)["index"] for cell in benchmark) == list(range(15625))
