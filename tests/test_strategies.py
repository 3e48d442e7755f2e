"""Search strategies: which batch feeds which gradient, in which order the optimizers step.

A tiny float64 supernet records the batches its forward sees; both optimizers are plain SGD
with lr 1 (no momentum, no clipping), so an update is exactly minus the gradient used, and we
compare it with gradients computed independently at the parameters the step should have used.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sdarts.search.strategies import STRATEGIES, SecondOrderBilevel, StepOutput, build_strategy
from sdarts.spaces.base import Supernet


class TinySupernet(Supernet):
    """Two mixed edges of three tanh-linear candidates and a linear head; records its inputs."""

    def __init__(self, activation="sigmoid"):
        super().__init__(activation)
        self.edges = nn.ModuleList(nn.ModuleList(nn.Linear(4, 4) for _ in range(3)) for _ in range(2))
        self.head = nn.Linear(4, 3)
        self.add_alpha("alpha", 2, 3)
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        p = self.arch_weights()["alpha"]
        h = x
        for e, ops in enumerate(self.edges):
            h = sum(p[e, k] * torch.tanh(op(h)) for k, op in enumerate(ops))
        return self.head(h)


def make_model(seed=0):
    torch.manual_seed(seed)
    model = TinySupernet().double()
    with torch.no_grad():
        model.alpha.normal_()  # distinct alphas, so a gradient at the wrong alpha would show
    return model


def make_batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)


def strategy_for(level, model, **kwargs):
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=1.0)
    a_opt = torch.optim.SGD(model.arch_parameters(), lr=1.0)
    return build_strategy(level, w_opt, a_opt, grad_clip=None, **kwargs)


def snapshot(model):
    return [p.detach().clone() for p in model.weight_parameters()], [a.detach().clone() for a in model.arch_parameters()]


def clone(model):
    # Not copy.deepcopy: a supernet after a forward holds its last p (a non-leaf tensor).
    m = TinySupernet().double()
    m.load_state_dict(model.state_dict())
    return m


def grads_at(model, weights, alphas, batch):
    """(dL/dw, dL/dalpha) of ``batch`` at the given parameter values, on a copy of ``model``."""
    m = clone(model)
    with torch.no_grad():
        for p, v in zip(m.weight_parameters(), weights):
            p.copy_(v)
        for a, v in zip(m.arch_parameters(), alphas):
            a.copy_(v)
    loss = F.cross_entropy(m(batch[0]), batch[1])
    gw = torch.autograd.grad(loss, list(m.weight_parameters()), retain_graph=True)
    ga = torch.autograd.grad(loss, m.arch_parameters())
    return list(gw), list(ga)


def updates(before, after):
    return [b - a for b, a in zip(before, after)]


def assert_all_close(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def seen_batches(model, *batches):
    """Which of ``batches`` each recorded forward saw, by identity."""
    return [next(i for i, b in enumerate(batches) if x is b[0]) for x in model.seen]


def test_registry_names_every_level():
    assert list(STRATEGIES) == ["single", "bilevel", "bilevel-second", "single-diff-batches", "single-diff-subsets"]
    assert {name: cls.alpha_source for name, cls in STRATEGIES.items()} == {
        "single": "same", "bilevel": "valid", "bilevel-second": "valid",
        "single-diff-batches": "train", "single-diff-subsets": "valid",
    }
    with pytest.raises(ValueError, match="optimizer level"):
        strategy_for("trilevel", make_model())


def test_single_level_one_forward_both_optimizers_same_batch():
    model = make_model()
    batch = make_batch(1)
    w0, a0 = snapshot(model)
    out = strategy_for("single", model).step(model, batch, batch)
    w1, a1 = snapshot(model)
    assert seen_batches(model, batch) == [0]
    gw, ga = grads_at(model, w0, a0, batch)
    assert_all_close(updates(w0, w1), gw)
    assert_all_close(updates(a0, a1), ga)
    assert isinstance(out, StepOutput) and out.targets is batch[1]
    assert out.weight_grads["alpha"].shape == (2, 3) and out.weight_grads["alpha"].abs().sum() > 0
    assert not out.loss.requires_grad


def test_first_order_bilevel_alpha_on_other_batch_then_w():
    model = make_model()
    batch_w, batch_a = make_batch(1), make_batch(2)
    w0, a0 = snapshot(model)
    strategy_for("bilevel", model).step(model, batch_w, batch_a)
    w1, a1 = snapshot(model)
    assert seen_batches(model, batch_w, batch_a) == [1, 0]
    _, ga = grads_at(model, w0, a0, batch_a)
    assert_all_close(updates(a0, a1), ga)
    # w steps after alpha: its gradient is taken at the new alpha (and differs from the old one's).
    gw_new, _ = grads_at(model, w0, a1, batch_w)
    gw_old, _ = grads_at(model, w0, a0, batch_w)
    assert_all_close(updates(w0, w1), gw_new)
    assert not torch.allclose(gw_new[0], gw_old[0])


@pytest.mark.parametrize("level", ["single-diff-batches", "single-diff-subsets"])
def test_ablations_take_alpha_and_w_from_their_own_batches_together(level):
    model = make_model()
    batch_w, batch_a = make_batch(1), make_batch(2)
    w0, a0 = snapshot(model)
    out = strategy_for(level, model).step(model, batch_w, batch_a)
    w1, a1 = snapshot(model)
    assert seen_batches(model, batch_w, batch_a) == [1, 0]
    _, ga = grads_at(model, w0, a0, batch_a)
    gw, _ = grads_at(model, w0, a0, batch_w)  # same (w, alpha) for both: updated together
    assert_all_close(updates(a0, a1), ga)
    assert_all_close(updates(w0, w1), gw)
    assert out.targets is batch_w[1]


def test_grad_sync_sees_both_parameter_groups_before_they_step():
    model = make_model()
    synced = []

    def record(params):
        synced.append([p.grad.clone() for p in params])

    strategy = strategy_for("single", model, grad_sync=record)
    batch = make_batch(1)
    w0, a0 = snapshot(model)
    strategy.step(model, batch, batch)
    gw, ga = grads_at(model, w0, a0, batch)
    assert_all_close(synced[0], gw)
    assert_all_close(synced[1], ga)


def test_grad_clip_bounds_w_update_only():
    model = make_model()
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=1.0)
    a_opt = torch.optim.SGD(model.arch_parameters(), lr=1.0)
    strategy = build_strategy("single", w_opt, a_opt, grad_clip=1e-3)
    batch = make_batch(1)
    w0, a0 = snapshot(model)
    strategy.step(model, batch, batch)
    w1, a1 = snapshot(model)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d) for d in updates(w0, w1)]))
    assert norm.item() == pytest.approx(1e-3, rel=1e-4)  # clip_grad_norm_ divides by norm + 1e-6
    _, ga = grads_at(model, w0, a0, batch)
    assert_all_close(updates(a0, a1), ga)
    with pytest.raises(ValueError, match="grad_clip"):
        build_strategy("single", w_opt, a_opt, grad_clip=0)


def exact_unrolled_alpha_grad(model, batch_w, batch_a, xi, momentum, weight_decay, buffers):
    """d/dalpha L_a(w - xi (momentum*buf + dL_w/dw + wd*w), alpha), by autograd through the step."""
    m = clone(model)
    names = [n for n, _ in m.named_parameters() if n not in m.alpha_names]
    weights = [dict(m.named_parameters())[n] for n in names]
    loss = F.cross_entropy(m(batch_w[0]), batch_w[1])
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    unrolled = {n: w - xi * (momentum * b + g + weight_decay * w) for n, w, g, b in zip(names, weights, grads, buffers)}
    loss_a = F.cross_entropy(torch.func.functional_call(m, unrolled, (batch_a[0],)), batch_a[1])
    return list(torch.autograd.grad(loss_a, m.arch_parameters()))


def test_second_order_matches_autograd_through_the_virtual_step():
    model = make_model()
    xi, momentum, wd = 0.3, 0.9, 3e-4
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=xi, momentum=momentum, weight_decay=wd)
    a_opt = torch.optim.SGD(model.arch_parameters(), lr=1.0)
    strategy = build_strategy("bilevel-second", w_opt, a_opt, grad_clip=None)
    assert isinstance(strategy, SecondOrderBilevel)
    strategy.step(model, make_batch(3), make_batch(4))  # fills the momentum buffers
    batch_w, batch_a = make_batch(1), make_batch(2)
    buffers = [w_opt.state[p]["momentum_buffer"].clone() for p in model.weight_parameters()]
    expected = exact_unrolled_alpha_grad(model, batch_w, batch_a, xi, momentum, wd, buffers)
    first_order = grads_at(model, *snapshot(model), batch_a)[1]
    w0, a0 = snapshot(model)
    model.seen.clear()
    strategy.step(model, batch_w, batch_a)
    w1, a1 = snapshot(model)
    got = updates(a0, a1)
    for g, e, f in zip(got, expected, first_order):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-8)
        assert not torch.allclose(e, f, rtol=1e-3)  # the second-order term is really there
    # Then w takes its ordinary step on the train batch, at the new alpha, from the restored w.
    gw, _ = grads_at(model, w0, a1, batch_w)
    expected_w = [w - xi * (momentum * b + g + wd * w) for w, g, b in zip(w0, gw, buffers)]
    assert_all_close(w1, expected_w)
    assert seen_batches(model, batch_w, batch_a)[-1] == 0
