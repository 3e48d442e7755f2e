"""TensorBoardLogger: the tags and values written per epoch record (fake writer; a real one if installed)."""

from __future__ import annotations

import sys

import pytest

from sdarts.search.tensorboard_log import MISSING_TENSORBOARD, TensorBoardLogger, tensorboard_available

EDGES = {"alpha_normal": ["2<-0", "2<-1"], "alpha_reduce": ["2<-0", "2<-1"]}
OPS = ["none", "skip_connect", "sep_conv_3x3"]


class FakeWriter:
    def __init__(self):
        self.calls = []

    def add_scalar(self, tag, value, step):
        self.calls.append(("scalar", tag, value, step))

    def add_text(self, tag, text, step):
        self.calls.append(("text", tag, text, step))

    def flush(self):
        self.calls.append(("flush",))

    def close(self):
        self.calls.append(("close",))


def record(epoch=1, **changes):
    """An epoch record as Searcher.epoch_record writes it (DARTS space, 2 edges x 3 ops)."""
    base = {
        "epoch": epoch,
        "lr": 0.025,
        "train_loss": 1.5,
        "train_acc": 40.0,
        "valid_loss": 1.75,
        "valid_acc": 37.5,
        "genotype": "Genotype(normal=[('sep_conv_3x3', 0)], normal_concat=range(2, 3))",
        "p": {
            "alpha_normal": [[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]],
            "alpha_reduce": [[0.5, 0.25, 0.25], [0.0, 0.5, 0.5]],
        },
        "dL_dp": {"alpha_normal": [[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]], "alpha_reduce": None},
        "time_s": 12.0,
        "elapsed_s": 12.0,
    }
    base.update(changes)
    return base


def per_edge(prefix, alpha, rows, step):
    return [("scalar", f"{prefix}/{alpha}/{edge}/{op}", value, step)
            for edge, row in zip(EDGES[alpha], rows) for op, value in zip(OPS, row)]


def test_tags_and_values_of_one_epoch():
    writer = FakeWriter()
    rec = record(train_loss=None)  # a non-finite loss is written as null: no point, not 0
    TensorBoardLogger("unused", EDGES, OPS, writer=writer).log_epoch(rec)
    assert writer.calls == [
        ("scalar", "loss/valid", 1.75, 1),
        ("scalar", "acc/train", 40.0, 1),
        ("scalar", "acc/valid", 37.5, 1),
        ("scalar", "lr", 0.025, 1),
        # no benchmark key: no benchmark/ tags
        *per_edge("p", "alpha_normal", rec["p"]["alpha_normal"], 1),
        *per_edge("p", "alpha_reduce", rec["p"]["alpha_reduce"], 1),
        *per_edge("dLdp", "alpha_normal", rec["dL_dp"]["alpha_normal"], 1),  # alpha_reduce's is None
        ("text", "genotype", f"`{rec['genotype']}`", 1),
        ("flush",),
    ]
    assert ("scalar", "p/alpha_normal/2<-1/sep_conv_3x3", 0.4, 1) in writer.calls


def test_benchmark_and_no_dl_dp():
    writer = FakeWriter()
    bench = {"index": 9930, "cifar10_valid": 91.5, "cifar10_test": 94.36, "cifar100_test": 73.5}
    logger = TensorBoardLogger("unused", EDGES, OPS, writer=writer)
    logger.log_epoch(record(epoch=3, dL_dp=None, benchmark=bench))
    scalars = {tag: (value, step) for kind, tag, value, step in (c for c in writer.calls if c[0] == "scalar")}
    assert {t: v for t, v in scalars.items() if t.startswith("benchmark/")} == {
        "benchmark/cifar10_valid": (91.5, 3), "benchmark/cifar10_test": (94.36, 3), "benchmark/cifar100_test": (73.5, 3),
    }  # the index is no curve
    assert not any(t.startswith("dLdp/") for t in scalars)
    assert len(scalars) == 5 + 3 + 2 * 2 * 3
    assert all(isinstance(v, float) for v, _ in scalars.values())

    writer.calls.clear()
    logger.log_epoch(record(epoch=4, benchmark=None, dL_dp={}))  # a cell the table lacks
    assert not any(c[1].startswith(("benchmark/", "dLdp/")) for c in writer.calls if c[0] == "scalar")
    logger.close()
    logger.close()
    assert writer.calls[-1] == ("close",) and writer.calls.count(("close",)) == 1


def test_nb201_space_tags():
    from sdarts.spaces import get_space

    space = get_space("nb201")
    ops = list(space.primitives.names)
    writer = FakeWriter()
    p = [[1.0 / len(ops)] * len(ops) for _ in space.edges["alpha"]]
    TensorBoardLogger("unused", space.edges, ops, writer=writer).log_epoch(record(p={"alpha": p}, dL_dp={"alpha": p}))
    tags = [c[1] for c in writer.calls if c[0] == "scalar" and c[1].startswith("p/")]
    assert len(tags) == 6 * 5 and tags[0] == "p/alpha/1<-0/none" and tags[-1] == "p/alpha/3<-2/avg_pool_3x3"


def test_shape_mismatch_is_an_error():
    logger = TensorBoardLogger("unused", EDGES, OPS, writer=FakeWriter())
    with pytest.raises(ValueError, match=r"p\['alpha_normal'\] has rows of lengths \[3\], expected 2 edges x 3 ops"):
        logger.log_epoch(record(p={"alpha_normal": [[0.1, 0.2, 0.7]]}))
    with pytest.raises(ValueError, match="alpha 'alpha' has no edge names"):
        logger.log_epoch(record(p={"alpha": [[1.0]]}))


def test_missing_tensorboard(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails, installed or not
    assert tensorboard_available() is False
    with pytest.raises(ValueError) as err:
        TensorBoardLogger(tmp_path, EDGES, OPS)
    assert str(err.value) == "--tensorboard needs the tensorboard package (pip install tensorboard)" == MISSING_TENSORBOARD
    TensorBoardLogger(tmp_path, EDGES, OPS, writer=FakeWriter())  # an injected writer needs no package
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not tensorboard_available(), reason="tensorboard is not installed (pip install tensorboard)")
def test_real_event_file(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    rec1, rec2 = record(epoch=1, benchmark={"index": 1, "cifar10_test": 94.25}), record(epoch=2, lr=0.0125, dL_dp=None)
    with TensorBoardLogger(tmp_path, EDGES, OPS) as logger:
        logger.log_epoch(rec1)
        logger.log_epoch(rec2)

    acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={event_accumulator.SCALARS: 0,
                                                                          event_accumulator.TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss/train", "lr", "benchmark/cifar10_test", "p/alpha_normal/2<-1/sep_conv_3x3",
            "dLdp/alpha_normal/2<-0/skip_connect"} <= set(tags["scalars"])
    # Scalars are stored as float32.
    assert [e.step for e in acc.Scalars("lr")] == [1, 2]
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx([0.025, 0.0125])
    assert [(e.step, e.value) for e in acc.Scalars("benchmark/cifar10_test")] == [(1, 94.25)]  # exact in float32
    assert [e.step for e in acc.Scalars("dLdp/alpha_normal/2<-0/skip_connect")] == [1]
    assert [e.value for e in acc.Scalars("p/alpha_normal/2<-1/sep_conv_3x3")] == pytest.approx([0.4, 0.4])
    assert "genotype/text_summary" in tags["tensors"]
    text = acc.Tensors("genotype/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text == f"`{rec1['genotype']}`"
