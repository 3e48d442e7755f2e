"""The DARTS supernet, genotype derivation, and the genotype's printed and JSON forms."""

import json

import pytest
import torch

from sdarts.darts import GENOTYPES, DartsSupernet, Genotype, genotype_from_json, genotype_to_json, parse_genotype
from sdarts.mixed_op import MixedOp
from sdarts.primitives import DARTS
from sdarts.spaces.darts.genotype import derive_cell


def small_supernet(**kwargs):
    torch.manual_seed(0)
    return DartsSupernet(C=4, num_classes=3, layers=3, **kwargs)


def test_supernet_layout():
    net = DartsSupernet(C=16, layers=8)
    assert [name for name, _ in net.named_parameters() if name.startswith("alpha")] == ["alpha_normal", "alpha_reduce"]
    assert net.alpha_normal.shape == net.alpha_reduce.shape == (14, 8)
    # every p starts at 1/8 under sigmoid
    assert torch.allclose(net.probabilities()["alpha_normal"], torch.full((14, 8), 1 / 8))
    assert [i for i, c in enumerate(net.cells) if c.reduction] == [2, 5]
    for cell in net.cells:
        assert len(cell.edges) == 14
        assert all(isinstance(e, MixedOp) for e in cell.edges)
        # edges from the two cell inputs reduce in reduction cells; all others keep the size
        strides = [e._ops[1].pool.stride if hasattr(e._ops[1], "pool") else None for e in cell.edges]
        first_edges = {0, 1, 2, 3, 5, 6, 9, 10}  # (node, input<2) positions in the 2,3,4,5 layout
        assert all(s == (2 if cell.reduction and k in first_edges else 1) for k, s in enumerate(strides))
    # search BatchNorms are non-affine
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and m.affine for c in net.cells for m in c.modules())


def test_supernet_forward_backward_and_dl_dp():
    net = small_supernet()
    x = torch.randn(2, 3, 8, 8)
    logits = net(x)
    assert logits.shape == (2, 3)
    logits.logsumexp(1).mean().backward()
    grads = net.weight_grads()
    assert grads["alpha_normal"].shape == (14, 8) and grads["alpha_reduce"].shape == (14, 8)
    assert net.alpha_normal.grad is not None and torch.isfinite(net.alpha_normal.grad).all()
    # `none` contributes nothing, so its dL/dp is exactly zero
    assert torch.all(grads["alpha_normal"][:, DARTS.index("none")] == 0)


def test_fused_and_plain_supernets_agree():
    fused = small_supernet(fused=True, backend="reference")
    plain = small_supernet(fused=False)
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    fused.double()
    plain.double()
    out_f, out_p = fused(x), plain(x)
    torch.testing.assert_close(out_f, out_p)
    out_f.square().sum().backward()
    out_p.square().sum().backward()
    torch.testing.assert_close(fused.alpha_reduce.grad, plain.alpha_reduce.grad)
    torch.testing.assert_close(fused.stem.conv[0].weight.grad, plain.stem.conv[0].weight.grad)


def test_imagenet_stem_downsamples_by_8():
    net = DartsSupernet(C=4, num_classes=5, layers=3, imagenet_stem=True, backend="reference")
    seen = {}
    net.cells[0].register_forward_hook(lambda m, inp, out: seen.update(s0=inp[0].shape, s1=inp[1].shape, out=out.shape))
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    assert seen["s0"][-1] == 16 and seen["s1"][-1] == 8  # s0 at 1/4, s1 at 1/8
    assert seen["out"][-1] == 8


def test_supernet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="layers"):
        DartsSupernet(layers=0)
    with pytest.raises(ValueError, match="activation"):
        DartsSupernet(activation="relu")


def _p_for(cell, strongest_none_edge):
    """p whose derived cell is ``cell``: chosen ops get p 0.9 - small, the rest 0.1; `none`
    is made the largest entry of ``strongest_none_edge`` (derivation must ignore it)."""
    p = torch.full((14, 8), 0.1)
    start = 0
    for node in range(4):
        for rank, k in enumerate((2 * node, 2 * node + 1)):
            op, j = cell[k]
            p[start + j, DARTS.index(op)] = 0.9 - 0.05 * rank - 0.01 * node
        start += node + 2
    p[strongest_none_edge, DARTS.index("none")] = 0.99
    return p


def test_derivation_picks_two_strongest_edges_ignoring_none():
    cell = [("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_5x5", 2), ("max_pool_3x3", 0),
            ("avg_pool_3x3", 3), ("sep_conv_5x5", 1), ("dil_conv_3x3", 4), ("sep_conv_3x3", 2)]
    p = _p_for(cell, strongest_none_edge=13)  # edge 13 = node 5 <- input 4
    assert derive_cell(p, steps=4) == cell


def test_supernet_genotype_from_hand_made_alpha():
    net = DartsSupernet(C=4, layers=3)
    normal = GENOTYPES["DARTS_V2"].normal
    reduce = GENOTYPES["PC_DARTS"].reduce
    with torch.no_grad():
        # sigmoid(alpha) = p  <=>  alpha = logit(p)
        net.alpha_normal.copy_(torch.logit(_p_for(normal, 0)))
        net.alpha_reduce.copy_(torch.logit(_p_for(reduce, 5)))
    g = net.genotype()
    assert g == Genotype(normal=normal, normal_concat=[2, 3, 4, 5], reduce=reduce, reduce_concat=[2, 3, 4, 5])


def test_derivation_under_softmax_ties_break_to_lower_index():
    net = DartsSupernet(C=4, layers=3, activation="softmax")
    # all alpha equal: every edge and op ties; the first non-none op on inputs 0 and 1 wins
    g = net.genotype()
    assert g.normal == [(DARTS.names[1], 0), (DARTS.names[1], 1)] * 4


@pytest.mark.parametrize("name", sorted(GENOTYPES))
def test_published_genotypes_round_trip_both_forms(name, tmp_path):
    g = GENOTYPES[name]
    text = str(g)
    assert text.startswith("Genotype(normal=[('")
    assert parse_genotype(text) == g
    as_json = json.dumps(genotype_to_json(g))
    assert genotype_from_json(as_json) == g
    assert parse_genotype(as_json) == g
    (tmp_path / "g.json").write_text(as_json)
    (tmp_path / "g.txt").write_text(text + "\n")
    assert parse_genotype(str(tmp_path / "g.json")) == g
    assert parse_genotype(tmp_path / "g.txt") == g
    assert parse_genotype({"genotype": genotype_to_json(g), "epoch": 49}) == g
    assert parse_genotype(name) == g


def test_parse_reads_range_concat_as_other_code_bases_print_it():
    text = ("Genotype(normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 0), ('dil_conv_5x5', 4)], normal_concat=range(2, 6), "
            "reduce=[('avg_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 2), ('max_pool_3x3', 0), "
            "('dil_conv_3x3', 1), ('dil_conv_3x3', 1), ('dil_conv_5x5', 3)], reduce_concat=range(2, 6))")
    assert parse_genotype(text) == GENOTYPES["PDARTS"]


@pytest.mark.parametrize("bad, match", [
    ("Genotype(normal=[('conv_9x9', 0), ('skip_connect', 1)], normal_concat=[2], reduce=[('skip_connect', 0), ('skip_connect', 1)], reduce_concat=[2])", "unknown op"),
    ("Genotype(normal=[('skip_connect', 2), ('skip_connect', 1)], normal_concat=[2], reduce=[('skip_connect', 0), ('skip_connect', 1)], reduce_concat=[2])", "cannot take input 2"),
    ("Genotype(normal=[('skip_connect', 0)], normal_concat=[2], reduce=[('skip_connect', 0), ('skip_connect', 1)], reduce_concat=[2])", "two"),
    ("Genotype(normal=__import__('os').getcwd(), normal_concat=[2], reduce=[], reduce_concat=[2])", "cannot parse"),
    ('{"normal": [["skip_connect", 0], ["skip_connect", 1]], "normal_concat": [2]}', "lacks"),
    ("NOT_A_GENOTYPE", "neither"),
])
def test_parse_rejects_bad_genotypes(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_genotype(bad)


def test_parse_rejects_wrong_types():
    with pytest.raises(TypeError, match="genotype"):
        parse_genotype(3.5)
