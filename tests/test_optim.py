"""optim.py: LARS against its rule written per tensor, and the warm-up + cosine schedule."""

import pytest
import torch

from equimod_edu.optim import LARS, lars_param_groups, warmup_cosine


def test_lars_scales_weights_and_leaves_biases_and_norms_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    groups = lars_param_groups(model, weight_decay=0.1)
    assert [p.ndim for p in groups[0]["params"]] == [2]
    assert sorted(p.ndim for p in groups[1]["params"]) == [1, 1, 1]
    opt = LARS(groups, lr=2.0, momentum=0.9, trust_coefficient=1e-3)
    model(torch.randn(8, 4)).pow(2).sum().backward()
    w, b = model[0].weight, model[0].bias
    w0, b0, gw, gb = w.detach().clone(), b.detach().clone(), w.grad.clone(), b.grad.clone()
    opt.step()
    update = gw + 0.1 * w0
    trust = 1e-3 * w0.norm() / update.norm()
    assert torch.allclose(w, w0 - 2.0 * trust * update, atol=1e-7)
    assert torch.allclose(b, b0 - 2.0 * gb, atol=1e-7)  # no decay, no trust ratio


def test_lars_matches_the_per_tensor_rule_over_steps_with_momentum():
    """The foreach implementation against the rule written per tensor (You et al.; as the official code)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    torch.nn.init.zeros_(model[2].weight)  # a zero-initialised layer: no trust scaling
    reference = [p.detach().clone() for p in model.parameters()]
    buffers = [torch.zeros_like(p) for p in reference]
    opt = LARS(lars_param_groups(model, weight_decay=0.1), lr=0.5, momentum=0.9, trust_coefficient=1e-3)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).sum().backward()
        for k, p in enumerate(model.parameters()):
            g = p.grad.clone()
            if p.ndim > 1:
                g = g + 0.1 * reference[k]
                pn, gn = reference[k].norm(), g.norm()
                g = g * (1e-3 * pn / gn if pn > 0 and gn > 0 else 1.0)
            buffers[k] = 0.9 * buffers[k] + g
            reference[k] = reference[k] - 0.5 * buffers[k]
        opt.step()
    assert all(torch.allclose(p, r, atol=1e-6) for p, r in zip(model.parameters(), reference))


def test_warmup_then_cosine():
    lrs = [warmup_cosine(s, 100, 10, 4.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.4) and lrs[9] == pytest.approx(4.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))  # linear rise, per step
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then decreasing
    assert lrs[-1] < 0.01
