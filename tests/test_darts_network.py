"""The discrete DARTS networks: cell wiring, heads, drop-path, and the published model sizes."""

import pytest
import torch
import torch.nn as nn

from sdarts.darts import GENOTYPES, Genotype, build_network
from sdarts.train import count_macs, count_parameters
from sdarts.spaces.darts.network import Cell, drop_path

SKIPS = [("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 2), ("skip_connect", 0),
         ("skip_connect", 3), ("skip_connect", 1), ("skip_connect", 4), ("skip_connect", 2)]


def test_cell_wiring_by_hand():
    g = Genotype(normal=SKIPS, normal_concat=[2, 3, 4, 5], reduce=SKIPS, reduce_concat=[3, 5])
    cell = Cell(g, 6, 6, 4, reduction=False, reduction_prev=False).eval()
    s0, s1 = torch.randn(2, 6, 8, 8), torch.randn(2, 6, 8, 8)
    a, b = cell.preprocess0(s0), cell.preprocess1(s1)
    n2 = a + b
    n3 = n2 + a
    n4 = n3 + b
    n5 = n4 + n2
    torch.testing.assert_close(cell(s0, s1), torch.cat([n2, n3, n4, n5], 1))

    # a reduction cell: skips from the inputs become stride-2 FactorizedReduce, concat [3, 5]
    red = Cell(g, 6, 6, 4, reduction=True, reduction_prev=False).eval()
    a, b = red.preprocess0(s0), red.preprocess1(s1)
    fr = red.ops
    n2 = fr[0](a) + fr[1](b)
    n3 = n2 + fr[3](a)
    n4 = n3 + fr[5](b)
    n5 = n4 + n2
    out = red(s0, s1)
    assert out.shape == (2, 8, 4, 4)
    torch.testing.assert_close(out, torch.cat([n3, n5], 1))


def test_cell_uses_named_ops_on_named_inputs():
    normal = [("max_pool_3x3", 1), ("avg_pool_3x3", 0)] + SKIPS[2:]
    cell = Cell(Genotype(normal, [2], normal, [2]), 4, 4, 4, reduction=False, reduction_prev=False).eval()
    s0, s1 = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6)
    a, b = cell.preprocess0(s0), cell.preprocess1(s1)
    expected = nn.functional.max_pool2d(b, 3, 1, 1) + nn.functional.avg_pool2d(a, 3, 1, 1, count_include_pad=False)
    torch.testing.assert_close(cell(s0, s1), expected)


def test_drop_path_drops_whole_samples_and_rescales():
    torch.manual_seed(0)
    out = drop_path(torch.ones(20000, 2, 2, 2), 0.3)
    per_sample = out.flatten(1)
    assert torch.all(per_sample == per_sample[:, :1])  # all or nothing per sample
    kept = per_sample[:, 0] > 0
    assert torch.allclose(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.7))
    assert abs(kept.float().mean().item() - 0.7) < 0.02
    x = torch.randn(3, 2)
    assert drop_path(x, 0.0) is x


def test_identity_paths_are_never_dropped():
    g = Genotype(normal=SKIPS, normal_concat=[2, 3, 4, 5], reduce=SKIPS, reduce_concat=[2, 3, 4, 5])
    cell = Cell(g, 4, 4, 4, reduction=False, reduction_prev=False).train()
    s0, s1 = torch.randn(4, 4, 5, 5), torch.randn(4, 4, 5, 5)
    torch.manual_seed(0)
    with_drop = cell(s0, s1, drop_prob=0.9)
    torch.manual_seed(0)
    torch.testing.assert_close(with_drop, cell(s0, s1, drop_prob=0.0))


def test_cifar_network_heads_and_modes():
    net = build_network("DARTS_V2", "cifar100", C=8, layers=5, drop_path_prob=0.2)
    assert net.drop_path_prob == 0.2
    x = torch.randn(2, 3, 32, 32)
    logits, aux = net.train()(x)
    assert logits.shape == aux.shape == (2, 100)
    logits, aux = net.eval()(x)
    assert logits.shape == (2, 100) and aux is None
    head = sum(p.numel() for p in net.auxiliary_head.parameters())
    assert count_parameters(net, exclude_auxiliary=False) - count_parameters(net) == head
    bare = build_network("DARTS_V2", "cifar100", C=8, layers=5, auxiliary=False)
    assert bare.auxiliary_head is None and bare.train()(x)[1] is None
    assert count_parameters(bare) == count_parameters(net)


def test_imagenet_network_at_224():
    net = build_network("PC_DARTS", "imagenet", C=8, layers=3, num_classes=7).train()
    logits, aux = net(torch.randn(2, 3, 224, 224))
    assert logits.shape == aux.shape == (2, 7)


def test_build_network_rejects_bad_input():
    with pytest.raises(ValueError, match="dataset"):
        build_network("DARTS_V2", "mnist")
    with pytest.raises(ValueError, match="drop_path_prob"):
        build_network("DARTS_V2", drop_path_prob=1.0)
    with pytest.raises(ValueError, match="layers >= 3"):
        build_network("DARTS_V2", layers=2)
    with pytest.raises(ValueError, match="unknown op"):
        build_network({"normal": [["conv_9x9", 0], ["skip_connect", 1]], "normal_concat": [2],
                       "reduce": [["skip_connect", 0], ["skip_connect", 1]], "reduce_concat": [2]})


def test_count_macs_by_formula():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),
                          nn.Flatten(), nn.Linear(8 * 5 * 5, 4))
    expected = 10 * 10 * 8 * 3 * 9 + 5 * 5 * 8 * 1 * 9 + 200 * 4
    assert count_macs(model, (3, 10, 10)) == expected
    assert model.training  # mode restored
    with pytest.raises(ValueError, match="input_size"):
        count_macs(model, (10, 10))


# Parameter counts (millions, auxiliary head excluded, as DARTS' count_parameters_in_MB) as the
# authors report them: DARTS repo / paper (V2: 3.3M CIFAR, 4.7M ImageNet; its code prints 3.35 /
# 4.72; V1's code count 3.17), PC-DARTS paper (3.6M / 5.3M), P-DARTS paper (3.4M / 4.9M).
PUBLISHED = {
    "DARTS_V2": {"cifar10": (3.35, 0.005), "imagenet": (4.72, 0.005)},
    "DARTS_V1": {"cifar10": (3.17, 0.005)},
    "PC_DARTS": {"cifar10": (3.6, 0.05), "imagenet": (5.3, 0.05)},
    "PC_DARTS_IMAGENET": {"imagenet": (5.3, 0.05)},
    "PDARTS": {"cifar10": (3.4, 0.05), "imagenet": (4.9, 0.05)},
}


@pytest.mark.parametrize("name, dataset", [(n, d) for n, sizes in PUBLISHED.items() for d in sizes])
def test_published_parameter_counts(name, dataset):
    C, layers = (48, 14) if dataset == "imagenet" else (36, 20)
    net = build_network(GENOTYPES[name], dataset, C=C, layers=layers)
    published, tolerance = PUBLISHED[name][dataset]
    assert abs(count_parameters(net) / 1e6 - published) <= tolerance
