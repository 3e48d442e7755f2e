"""The NAS-Bench-201 space: cell strings, the supernet, and the discrete networks' sizes."""

import csv
import random

import pytest
import torch

from sdarts.mixed_op import MixedOp
from sdarts.nb201 import EDGE_NAMES, InferCell, NB201Cell, NB201Supernet, ResNetBasicBlock, SearchCell, build_network
from sdarts.primitives import NB201

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
BEST_OPS = ("nor_conv_3x3",) * 3 + ("skip_connect", "nor_conv_3x3", "nor_conv_3x3")
ALL_SKIP = NB201Cell.from_ops(["skip_connect"] * 6)




# ----------------------------------------------------------------------------- NB201Cell


def test_cell_parses_and_prints_the_benchmark_format():
    cell = NB201Cell.from_str(BEST)
    assert cell.ops == BEST_OPS
    assert cell.tostr() == BEST and str(cell) == BEST
    assert cell.nodes == ((("nor_conv_3x3", 0),), (("nor_conv_3x3", 0), ("nor_conv_3x3", 1)),
                          (("skip_connect", 0), ("nor_conv_3x3", 1), ("nor_conv_3x3", 2)))
    assert eval(repr(cell), {"NB201Cell": NB201Cell}) == cell
    assert NB201Cell.from_str(f"  {BEST}\n") == cell


def test_cells_are_values():
    a, b = NB201Cell.from_str(BEST), NB201Cell.from_ops(list(BEST_OPS))
    assert a == b and hash(a) == hash(b) and len({a, b, ALL_SKIP}) == 2
    assert a != ALL_SKIP
    with pytest.raises(AttributeError):
        a.ops = ALL_SKIP.ops


def test_every_op_at_every_edge_round_trips():
    rng = random.Random(0)
    for _ in range(200):
        cell = NB201Cell.from_ops([rng.choice(NB201.names) for _ in range(6)])
        assert NB201Cell.from_str(cell.tostr()) == cell


@pytest.mark.parametrize(
    "text, message",
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "3 nodes"),
        (BEST.replace("nor_conv_3x3~0|+|nor_conv_3x3~0", "conv_9x9~0|+|nor_conv_3x3~0"), "unknown NAS-Bench-201 operation"),
        (BEST.replace("skip_connect~0", "skip_connect~1"), "must be written 'op~0'"),
        (BEST.replace("|nor_conv_3x3~0|nor_conv_3x3~1|", "|nor_conv_3x3~0|"), "node 2 must have 2 inputs"),
        (BEST.replace("skip_connect~0", "skip_connect0"), "must be written 'op~0'"),
        ("nor_conv_3x3~0+|a~0|b~1|+|c~0|d~1|e~2|", "node 1 of arch_str"),
    ],
)
def test_malformed_strings_are_refused_clearly(text, message):
    with pytest.raises(ValueError, match=message):
        NB201Cell.from_str(text)


def test_bad_op_lists_and_types_are_refused():
    with pytest.raises(ValueError, match="6 operations"):
        NB201Cell.from_ops(["none"] * 5)
    with pytest.raises(ValueError, match="unknown"):
        NB201Cell.from_ops(["none"] * 5 + ["sep_conv_3x3"])
    with pytest.raises(TypeError, match="from_str"):
        NB201Cell.from_ops(BEST)
    with pytest.raises(TypeError, match="arch_str"):
        NB201Cell.from_str(None)
    with pytest.raises(TypeError, match="arch"):
        build_network(42)


# ----------------------------------------------------------------------------- supernet


def tiny_supernet(**kwargs):
    torch.manual_seed(0)
    return NB201Supernet(C=4, N=1, **kwargs)


def test_supernet_layout():
    net = tiny_supernet()
    assert [name for name, _ in net.named_parameters() if "alpha" in name] == ["alpha"]
    assert net.arch_parameters() == [net.alpha] and net.alpha.shape == (6, 5)
    assert net.edge_names() == list(EDGE_NAMES) == ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
    kinds = [type(cell) for cell in net.cells]
    assert kinds == [SearchCell, ResNetBasicBlock, SearchCell, ResNetBasicBlock, SearchCell]
    assert [cell.edges[0].primitives.names for cell in net.cells if isinstance(cell, SearchCell)] == [NB201.names] * 3
    # Search BNs are non-affine without running statistics; the macro network's are standard.
    search_bns = [m for cell in net.cells if isinstance(cell, SearchCell) for m in cell.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert search_bns and all(not bn.affine and bn.running_mean is None for bn in search_bns)
    assert net.stem[1].affine and net.cells[1].conv_a.bn.affine and net.lastact[0].affine
    assert net.classifier.in_features == 16
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in net.weight_parameters()) + 30


def test_supernet_default_size_follows_the_benchmark():
    net = NB201Supernet(num_classes=100)
    assert len(net.cells) == 17
    assert [cell.conv_a.conv.out_channels for cell in net.cells if isinstance(cell, ResNetBasicBlock)] == [32, 64]
    assert net.classifier.out_features == 100 and net.classifier.in_features == 64
    assert torch.allclose(net.probabilities()["alpha"], torch.full((6, 5), 0.2))


def test_supernet_forward_backward_gives_per_op_gradients():
    net = tiny_supernet()
    for edge in (m for m in net.modules() if hasattr(m, "keep_weight_grad")):
        edge.keep_weight_grad = True  # per-edge dL/dp, asked for
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    logits = net(x)
    assert logits.shape == (4, 10)
    torch.nn.functional.cross_entropy(logits, y).backward()
    grads = net.weight_grads()["alpha"]
    assert grads.shape == (6, 5) and torch.isfinite(grads).all()
    assert torch.all(grads[:, 0] == 0)  # `none` contributes nothing
    assert grads[:, 1:].abs().sum() > 0 and net.alpha.grad.abs().sum() > 0
    # Each MixedOp saw its own share; over the cells they add up to dL/dp.
    shares = sum(torch.stack([edge.last_weight_grad for edge in cell.edges]) for cell in net.cells if isinstance(cell, SearchCell))
    torch.testing.assert_close(shares, grads, rtol=1e-5, atol=1e-7)


def test_fused_and_plain_supernets_agree():
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    results = []
    for fused in (True, False):
        net = tiny_supernet(fused=fused, alpha_init=0.3).double()
        with torch.no_grad():
            net.alpha.add_(torch.linspace(-1, 1, 30, dtype=torch.float64).view(6, 5))
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        results.append((loss.detach(), net.alpha.grad.clone(), net.stem[0].weight.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_channels_last_input_gives_the_same_result():
    net = tiny_supernet()
    x = torch.randn(4, 3, 8, 8)
    expected = net(x)
    net_cl = net.to(memory_format=torch.channels_last)
    got = net_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_softmax_supernet_runs():
    net = tiny_supernet(activation="softmax")
    assert torch.allclose(net.probabilities()["alpha"].sum(-1), torch.ones(6))
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_genotype_is_the_argmax_per_edge_none_included():
    net = tiny_supernet()
    chosen = [0, 3, 2, 1, 4, 3]
    with torch.no_grad():
        net.alpha.zero_()
        net.alpha[torch.arange(6), torch.tensor(chosen)] = 1.0
    assert net.genotype() == NB201Cell.from_ops([NB201.names[k] for k in chosen])
    assert net.genotype().ops[0] == "none"


@pytest.mark.parametrize("kwargs, message", [({"C": 0}, "C must"), ({"N": 1.5}, "N must"), ({"activation": "relu"}, "activation")])
def test_supernet_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NB201Supernet(**kwargs)


def test_one_hot_supernet_computes_the_discrete_network():
    """With p one-hot, the supernet is the benchmark's network for that cell (same weights, train-mode BN)."""
    cell = NB201Cell.from_str("|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    supernet = tiny_supernet(alpha_init=-40.0).double()
    with torch.no_grad():
        supernet.alpha[torch.arange(6), torch.tensor([NB201.index(op) for op in cell.ops])] = 40.0
    net = build_network(cell, C=4, N=1).double()
    # Copy every weight across: macro modules by name, cell convs edge by edge.
    missing, unexpected = net.load_state_dict({k: v for k, v in supernet.state_dict().items() if ".edges." not in k and k != "alpha"}, strict=False)
    assert not unexpected and all(".layers." in k for k in missing)
    with torch.no_grad():
        for searched, discrete in zip(supernet.cells, net.cells):
            if isinstance(discrete, InferCell):
                live = [(e, op) for e, op in enumerate(cell.ops) if op != "none"]
                for layer, (e, op) in zip(discrete.layers, live):
                    if op.startswith("nor_conv"):
                        layer.conv.weight.copy_(searched.edges[e]._ops[NB201.index(op)].conv.weight)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(supernet(x), net(x), rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- discrete networks


def test_discrete_network_instantiates_only_live_edges():
    cell = NB201Cell.from_str("|none~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
    net = build_network(cell, num_classes=120, C=4, N=2)
    cells = [c for c in net.cells if isinstance(c, InferCell)]
    assert len(cells) == 6 and all(len(c.layers) == 3 for c in cells)
    assert all(not isinstance(m, MixedOp) for m in net.modules())
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bn.affine and bn.running_mean is not None for bn in bns)
    out = net(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 120)
    out.sum().backward()


def test_a_cell_whose_output_node_is_dead_outputs_zeros():
    cell = NB201Cell.from_str("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|")
    infer = build_network(cell, C=4, N=1).cells[0]
    assert infer(torch.randn(2, 4, 8, 8)).abs().max() == 0


def _benchmark_rows(data_dir):
    path = data_dir / "nb201" / "nb201_200ep_accuracies.csv"
    if not path.is_file():
        pytest.skip(f"NB201 table not found at {path}")
    with open(path, newline="") as f:
        return {int(row["index"]): row for row in csv.DictReader(f)}


def test_parameter_counts_equal_the_benchmark(data_dir):
    rows = _benchmark_rows(data_dir)
    all_skip = next(i for i, row in rows.items() if row["arch_str"] == ALL_SKIP.tostr())
    sample = sorted(random.Random(0).sample(sorted(rows), 30)) + [6111, 9930, 857, all_skip]
    for index in sample:
        row = rows[index]
        for column, num_classes in (("cifar10", 10), ("cifar100", 100), ("imagenet16", 120)):
            with torch.device("meta"):  # shapes only: no memory, no init
                net = build_network(row["arch_str"], num_classes=num_classes)
            count = sum(p.numel() for p in net.parameters())
            assert count / 1e6 == pytest.approx(float(row[f"{column}_params_mb"]), abs=1e-6), (index, column, count)
