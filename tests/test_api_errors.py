"""Bad input to the Python API fails at construction or call entry with a one-line
ValueError/TypeError that names the argument, never deep inside torch or a kernel."""

import pytest
import torch

import sdarts
from sdarts import MixedOp
from sdarts.ops.normalized_edge import mixed_normalized_edge
from sdarts.primitives import DARTS, NB201, resolve_primitives

NB201_NAMES = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


def raises(exc, match, fn):
    with pytest.raises(exc, match=match) as info:
        fn()
    assert "\n" not in str(info.value), "the message should be one line"
    return str(info.value)


# ---------------------------------------------------------------------------- primitives


@pytest.mark.parametrize("names,want", [
    (NB201_NAMES, NB201),
    (["nor_conv_3x3", "skip_connect"], NB201),  # a subset, in the caller's order
    (["sep_conv_3x3", "none"], DARTS),
    (["none", "skip_connect"], DARTS),  # in both sets: the DARTS conventions, as before
])
def test_a_list_of_names_takes_the_set_that_has_them_all(names, want):
    m = MixedOp(4, 1, names)
    assert m.primitives.name == want.name and m.primitives.names == tuple(names)
    assert m(torch.randn(2, 4, 5, 5), torch.rand(len(names))).shape == (2, 4, 5, 5)


def test_nb201_names_as_a_list_build_the_nb201_edge():
    torch.manual_seed(0)
    listed = MixedOp(4, 1, NB201_NAMES)
    torch.manual_seed(0)
    given = MixedOp(4, 1, NB201)
    x, w = torch.randn(2, 4, 5, 5), torch.rand(5)
    assert torch.equal(listed(x, w), given(x, w))


@pytest.mark.parametrize("name,want", [("nb201", NB201), ("NB201", NB201), ("darts", DARTS), ("Darts", DARTS)])
def test_a_set_name_is_the_set_not_its_letters(name, want):
    assert MixedOp(4, 1, name).primitives is want


@pytest.mark.parametrize("primitives,exc,match", [
    ("sep_conv_3x3", ValueError, r"primitives='sep_conv_3x3' is not a known set name \('darts', 'nb201'\)"),
    ([], ValueError, "primitives must name at least one candidate"),
    (7, TypeError, "primitives must be a PrimitiveSet, a set name or a list of candidate names, got int"),
    (["none", 3], TypeError, r"primitives must be candidate names \(str\), got 3 \(int\)"),
    (["skip_connect", "none", "skip_connect"], ValueError, r"primitives names \['skip_connect'\] more than once"),
])
def test_bad_primitives(primitives, exc, match):
    raises(exc, match, lambda: MixedOp(4, 1, primitives))


@pytest.mark.parametrize("names,unknown", [
    (["sep_conv_3x3", "conv_9x9"], "['conv_9x9']"),
    (["nor_conv_1x1", "sep_conv_3x3"], "['nor_conv_1x1']"),  # each known, but to different sets
])
def test_unknown_names_are_named_with_the_known_sets(names, unknown):
    message = raises(ValueError, "unknown darts primitives", lambda: MixedOp(4, 1, names))
    assert f"{unknown} in primitives={names}" in message
    assert "sdarts.primitives.DARTS = [" in message and "sdarts.primitives.NB201 = ['none', 'skip_connect'," in message


def test_resolve_primitives_passes_a_set_through():
    assert resolve_primitives(NB201) is NB201


# ---------------------------------------------------------------------------- recompute


def test_recompute_takes_one_name_as_one_name():
    one = MixedOp(4, 1, DARTS, recompute="sep_conv_3x3")
    assert one._recomputed == MixedOp(4, 1, DARTS, recompute=("sep_conv_3x3",))._recomputed
    assert sum(one._recomputed) == 1 and one.recompute == ("sep_conv_3x3",)


@pytest.mark.parametrize("recompute,exc,match", [
    ("conv_9x9", ValueError, r"recompute names \['conv_9x9'\], which are not candidates of this edge \['none', "),
    (["nor_conv_1x1"], ValueError, r"recompute names \['nor_conv_1x1'\], .*'sep_conv_3x3'"),
    (1, TypeError, "recompute must be a bool, a candidate name or a list of names, got 1"),
    ([None], TypeError, "recompute must be a bool"),
])
def test_bad_recompute(recompute, exc, match):
    raises(exc, match, lambda: MixedOp(4, 1, DARTS, recompute=recompute))


# ---------------------------------------------------------------------------- C, stride, backend


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(C=0, stride=1), ValueError, "C must be positive, got 0"),
    (dict(C=-4, stride=1), ValueError, "C must be positive, got -4"),
    (dict(C=4.0, stride=1), TypeError, r"C must be an int \(positive\), got float 4.0"),
    (dict(C=True, stride=1), TypeError, r"C must be an int \(positive\), got bool True"),
    (dict(C=4, stride=2.0), TypeError, r"stride must be an int \(1 or 2\), got float 2.0"),
    (dict(C=4, stride=True), TypeError, r"stride must be an int \(1 or 2\), got bool True"),
    (dict(C=4, stride=1, C_out=0), ValueError, "C_out must be positive, got 0"),
    (dict(C=4, stride=1, backend="fast"), ValueError, r"backend must be one of \('auto', .*\), got 'fast'"),
    (dict(C=4, stride=1, backend=None), ValueError, "backend must be one of .*, got None"),
    (dict(C=4, stride=1, fused="no"), TypeError, "fused must be a bool, got 'no'"),
])
def test_bad_constructor_arguments(kwargs, exc, match):
    raises(exc, match, lambda: MixedOp(**kwargs))


def test_numpy_style_ints_are_ints():
    m = MixedOp(torch.tensor(4).numpy()[()], torch.tensor(2).numpy()[()])
    assert type(m.C) is int and m(torch.randn(1, 4, 6, 6), torch.rand(len(DARTS))).shape == (1, 4, 3, 3)


# ---------------------------------------------------------------------------- MixedOp.forward


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("x,weights,relu_x,exc,match", [
    (torch.randn(2, 8, 5, 5), torch.rand(8), None, ValueError, r"MixedOp\(C=16\) got input with 8 channels"),
    (torch.randn(16, 5, 5), torch.rand(8), None, ValueError, r"MixedOp\(C=16\) expects x of shape \(N, 16, H, W\)"),
    ([1.0], torch.rand(8), None, TypeError, "x must be a torch.Tensor, got list"),
    (torch.randn(2, 16, 5, 5), [0.125] * 8, None, TypeError, "weights must be a torch.Tensor of 8 mixing weights, got list"),
    (torch.randn(2, 16, 5, 5), torch.ones(8, dtype=torch.int64), None, TypeError, "weights must be a floating-point tensor"),
    (torch.randn(2, 16, 5, 5), torch.rand(8), torch.randn(2, 16, 3, 3), ValueError, r"relu_x must be F.relu\(x\)"),
    (torch.randn(2, 16, 5, 5), torch.rand(8), "relu", TypeError, r"relu_x must be None or the tensor F.relu\(x\)"),
])
def test_bad_forward_input(fused, x, weights, relu_x, exc, match):
    m = MixedOp(16, 1, DARTS, fused=fused)
    raises(exc, match, lambda: m(x, weights, relu_x))


def test_input_checks_do_not_break_torch_compile():
    torch.manual_seed(0)
    m = MixedOp(4, 1, NB201, backend="reference")
    w = torch.rand(5)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager", dynamic=True)  # no graph break
    x = torch.randn(2, 4, 6, 6)
    assert torch.allclose(compiled(x, w), m(x, w), atol=1e-6)
    lenient = torch.compile(m, backend="aot_eager", dynamic=True)
    raises(ValueError, r"MixedOp\(C=4\) got input with 8 channels", lambda: lenient(torch.randn(2, 8, 6, 6), w))


# ---------------------------------------------------------------------------- mixed_edge / mixed_sum

B0 = torch.randn(2, 3, 4, 4)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: sdarts.mixed_edge([B0, B0], [0.5] * 4), TypeError, "coef must be a torch.Tensor, got list"),
    (lambda: sdarts.mixed_edge([B0], torch.ones(3, dtype=torch.int64)), TypeError, "coef must be a floating-point tensor"),
    (lambda: sdarts.mixed_edge([B0], torch.ones(3), scale=[[1.0] * 3], shift=torch.zeros(1, 3)),
     TypeError, "scale must be a torch.Tensor, got list"),
    (lambda: sdarts.mixed_edge([B0], torch.ones(3), scale=torch.ones(1, 3), shift=[[0.0] * 3]),
     TypeError, "shift must be a torch.Tensor, got list"),
    (lambda: sdarts.mixed_edge(torch.randn(2, 2, 3, 4, 4), torch.ones(4)), TypeError, "branches must be a list or tuple"),
    (lambda: sdarts.mixed_edge([B0, torch.randn(2, 3, 4, 5)], torch.ones(4)),
     ValueError, r"branches\[1\] has shape \(2, 3, 4, 5\), branches\[0\] has \(2, 3, 4, 4\)"),
    (lambda: sdarts.mixed_edge([B0], torch.ones(3), x=torch.randn(2, 3, 5, 5), has_skip=True),
     ValueError, r"x has shape \(2, 3, 5, 5\), branches\[0\] has"),
    (lambda: sdarts.mixed_edge([B0, B0.double()], torch.ones(4)), TypeError, r"branches\[1\] has dtype torch.float64"),
    (lambda: sdarts.mixed_edge([B0[0]], torch.ones(3)), ValueError, r"branches\[0\] must be 4-D \(N, C, H, W\)"),
    # mixed_sum already checked these; kept so that the shared checks keep its messages.
    (lambda: sdarts.mixed_sum([B0, B0], [0.5, 0.5]), TypeError, "weights must be a torch.Tensor, got list"),
    (lambda: sdarts.mixed_sum([B0, B0], torch.ones(2, 1)), ValueError, "weights must be 1-D"),
    (lambda: sdarts.mixed_sum([B0, B0[0]], torch.ones(2)), ValueError, r"branches\[1\] has shape"),
])
def test_bad_mixed_edge_and_mixed_sum_input(call, exc, match):
    raises(exc, match, call)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: mixed_normalized_edge([B0], [1.0] * 3), TypeError, "coef must be a torch.Tensor, got list"),
    (lambda: mixed_normalized_edge(torch.randn(2, 2, 3, 4, 4), torch.ones(4)), TypeError, "branches must be a list or tuple"),
    (lambda: mixed_normalized_edge([B0, [1.0]], torch.ones(4)), TypeError, r"branches\[1\] must be a torch.Tensor, got list"),
    (lambda: mixed_normalized_edge([B0, torch.randn(2, 3, 4, 5)], torch.ones(4)), ValueError, r"branches\[1\] has shape"),
    (lambda: mixed_normalized_edge([B0], torch.ones(3), x=torch.randn(2, 3, 5, 5), has_skip=True), ValueError, "x has shape"),
    (lambda: mixed_normalized_edge([B0[0]], torch.ones(3)), ValueError, r"branches\[0\] must be 4-D"),
])
def test_bad_normalized_edge_input(call, exc, match):
    raises(exc, match, call)
