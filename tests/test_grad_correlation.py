"""The gradient-correlation diagnostic (Single-DARTS Eq. 8): the formula, the hook capture on
the supernets, same vs independent batches, and that it leaves the model's state alone."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from sdarts.darts import DartsSupernet
from sdarts.nb201 import EDGE_NAMES, NB201Supernet
from sdarts.search.grad_correlation import default_edges, edge_grad_correlation, grad_correlation, named_edges

N, HW = 8, 8


def eq8_loops(x_a, g_a, x_w, g_w) -> float:
    """Eq. 8 written out: mean over pairs (i, j) of cos(g_a[i], g_w[j]) * cos(x_a[i], x_w[j])."""

    def cos(u, v):
        u, v = u.double().flatten(), v.double().flatten()
        nu, nv = math.sqrt(float((u * u).sum())), math.sqrt(float((v * v).sum()))
        return 0.0 if nu == 0 or nv == 0 else float((u * v).sum()) / (nu * nv)

    total = 0.0
    for i in range(x_a.shape[0]):
        for j in range(x_w.shape[0]):
            total += cos(g_a[i], g_w[j]) * cos(x_a[i], x_w[j])
    return total / (x_a.shape[0] * x_w.shape[0])


def tiny_nb201(seed=0):
    torch.manual_seed(seed)
    return NB201Supernet(num_classes=10, C=4, N=1).double().train()


def batch(seed, n=N):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, HW, HW, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


# ----------------------------------------------------------------------------- the formula


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_formula_matches_explicit_loops(seed):
    g = torch.Generator().manual_seed(seed)
    # float32 inputs of different batch sizes; the output gradient of another shape (stride 2).
    x_a, x_w = torch.randn(5, 3, 4, 4, generator=g), torch.randn(7, 3, 4, 4, generator=g)
    g_a, g_w = torch.randn(5, 3, 2, 2, generator=g), torch.randn(7, 3, 2, 2, generator=g)
    x_a[1] = 0  # a zero sample counts as cosine 0
    got = grad_correlation(x_a, g_a, x_w, g_w)
    assert got.dtype == torch.float64 and got.dim() == 0
    assert got.item() == pytest.approx(eq8_loops(x_a, g_a, x_w, g_w), rel=1e-6, abs=1e-7)
    # Scale-free: neither the loss scale nor the feature scale enters.
    assert grad_correlation(3 * x_a, 1e-3 * g_a, x_w, 7 * g_w).item() == pytest.approx(got.item(), rel=1e-5)


def test_formula_self_pairs():
    g = torch.Generator().manual_seed(3)
    x, gr = torch.randn(1, 2, 3, 3, generator=g), torch.randn(1, 2, 3, 3, generator=g)
    assert grad_correlation(x, gr, x, gr).item() == pytest.approx(1.0)
    assert grad_correlation(x, gr, x, -gr).item() == pytest.approx(-1.0)


def test_formula_rejects_mismatched_shapes():
    x, g = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    with pytest.raises(ValueError):
        grad_correlation(x, g[:3], x, g)
    with pytest.raises(ValueError):
        grad_correlation(x, g, torch.randn(4, 3, 3, 3), g)


# ----------------------------------------------------------------------------- which edges


def test_default_edges_are_every_edge_of_first_middle_last_cell():
    model = NB201Supernet(num_classes=10, C=2, N=2)  # cells: 0 1 [block] 3 4 [block] 6 7
    edges = default_edges(model)
    assert list(edges) == [f"cell{k}/{e}" for k in (0, 4, 7) for e in EDGE_NAMES]
    assert edges["cell4/2<-1"] is model.cells[4].edges[2]
    assert len(named_edges(model)) == 6 * 6

    darts = DartsSupernet(C=2, num_classes=10, layers=5, steps=2, multiplier=2, stem_multiplier=1)
    names = ["2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
    assert list(default_edges(darts)) == [f"cell{k}/{e}" for k in (0, 2, 4) for e in names]
    assert default_edges(darts)["cell2/3<-1"] is darts.cells[2].edges[3]


# ----------------------------------------------------------------------------- the capture


def direct(model, batch_a, batch_w, names):
    """dL/d(edge output) by retain_grad + backward on a copy, and Eq. 8 by the loops."""

    def capture(b):
        m = copy.deepcopy(model)
        edges = named_edges(m)
        seen = {}

        def keep(name):
            def hook(mod, args, out):  # returns None: the output stays the module's
                out.retain_grad()
                seen[name] = (args[0], out)
            return hook

        handles = [edges[n].register_forward_hook(keep(n)) for n in names]
        F.cross_entropy(m(b[0]), b[1]).backward()
        for h in handles:
            h.remove()
        return {n: (x.detach(), out.grad) for n, (x, out) in seen.items()}

    a, w = capture(batch_a), capture(batch_w)
    return {n: eq8_loops(*a[n], *w[n]) for n in names}


def test_helper_matches_direct_computation():
    model = tiny_nb201()
    batch_a, batch_w = batch(10), batch(11)
    names = list(default_edges(model))
    want = direct(model, batch_a, batch_w, names)
    got = edge_grad_correlation(model, batch_a, batch_w)
    assert list(got) == names
    for n in names:
        assert got[n] == pytest.approx(want[n], rel=1e-9, abs=1e-12), n
    assert any(abs(v) > 1e-4 for v in got.values())  # not a comparison of zeros


def test_same_batch_positive_independent_batches_near_zero():
    same, indep = [], []
    for seed in range(3):
        model = tiny_nb201(seed)
        a, w = batch(100 + seed), batch(200 + seed)
        same.append(edge_grad_correlation(model, a, a))
        indep.append(edge_grad_correlation(model, a, w))
    for name in same[0]:
        s = sum(r[name] for r in same) / len(same)
        i = sum(r[name] for r in indep) / len(indep)
        # Same batch: the N self-pairs alone give 1/N = 0.125; independent: about 0.
        assert s > 0.06, (name, s)
        assert abs(i) < 0.02, (name, i)


def test_helper_leaves_grads_buffers_and_dldp_alone():
    model = tiny_nb201()
    x, y = batch(5)
    F.cross_entropy(model(x), y).backward()
    model.classifier.bias.grad = None  # one parameter without a gradient
    grads = {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    dldp = {k: v.clone() for k, v in model.weight_grads().items()}
    assert any("running_mean" in n for n in buffers)

    edge_grad_correlation(model, batch(6), batch(7), edges=["cell0/1<-0", "cell4/3<-2"])
    for n, p in model.named_parameters():
        if grads[n] is None:
            assert p.grad is None, n
        else:
            assert torch.equal(p.grad, grads[n]), n
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n
    assert all(torch.equal(model.weight_grads()[k], v) for k, v in dldp.items())
    assert model.training


def test_darts_supernet_and_edge_selection():
    torch.manual_seed(0)
    model = DartsSupernet(C=2, num_classes=10, layers=3, steps=2, multiplier=2, stem_multiplier=1).double()
    a, w = batch(1, n=4), batch(2, n=4)
    same = edge_grad_correlation(model, a, a)
    assert len(same) == 3 * 5 and all(v > 0 for v in same.values())
    got = edge_grad_correlation(model, a, w, edges=["cell1/2<-0"])  # a stride-2 edge of the reduction cell
    assert list(got) == ["cell1/2<-0"] and math.isfinite(got["cell1/2<-0"])
    with pytest.raises(KeyError):
        edge_grad_correlation(model, a, w, edges=["cell9/2<-0"])
