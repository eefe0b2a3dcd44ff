"""Tests of equimod_edu.losses against explicit loop implementations, and across 2 processes."""

import inspect
import math
import time
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import free_port, leave_process_group

from equimod_edu.losses import (
    byol_loss,
    equimod_loss,
    equivariance_gain,
    equivariance_loss,
    info_nce_chance,
    nt_xent,
    positive_top1,
)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- references


def ref_contrastive(vectors, labels, temperature):
    """Loop InfoNCE in float64: anchor i's positive is the other vector with the same label.

    ``vectors``: list of 1-D arrays; ``labels``: one hashable per vector, shared by exactly
    one pair. Every vector except the anchor itself is in the denominator.
    """
    v = [np.asarray(x, dtype=np.float64) for x in vectors]
    v = [x / np.linalg.norm(x) for x in v]
    total = 0.0
    for i, anchor in enumerate(v):
        (j,) = [k for k in range(len(v)) if k != i and labels[k] == labels[i]]
        sims = {k: math.exp(float(anchor @ v[k]) / temperature) for k in range(len(v)) if k != i}
        total += -math.log(sims[j] / sum(sims.values()))
    return total / len(v)


def ref_nt_xent(z_1, z_2, temperature):
    vectors = list(z_1.double().numpy()) + list(z_2.double().numpy())
    labels = [i for i in range(len(z_1))] * 2                 # image index: the two views pair
    return ref_contrastive(vectors, labels, temperature)


def ref_equivariance(y_1, y_2, y_hat_1, y_hat_2, temperature):
    vectors, labels = [], []
    for view, (y, y_hat) in enumerate([(y_1, y_hat_1), (y_2, y_hat_2)]):
        for i in range(len(y)):
            vectors += [y[i].double().numpy(), y_hat[i].double().numpy()]
            labels += [(view, i), (view, i)]                  # same image and same view
    return ref_contrastive(vectors, labels, temperature)


# ---------------------------------------------------------------------------- hand-checked values


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_nt_xent_matches_the_loop_reference(temperature):
    z_1, z_2 = rand(3, 4, seed=1), rand(3, 4, seed=2)
    loss = nt_xent(z_1, z_2, temperature)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(ref_nt_xent(z_1, z_2, temperature), rel=1e-5)


@pytest.mark.parametrize("temperature", [0.2, 1.0])
def test_equivariance_loss_matches_the_loop_reference(temperature):
    y_1, y_2, y_hat_1, y_hat_2 = (rand(2, 3, seed=s) for s in range(4))
    loss = equivariance_loss(y_1, y_2, y_hat_1, y_hat_2, temperature)
    ref = ref_equivariance(y_1, y_2, y_hat_1, y_hat_2, temperature)
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def test_byol_loss_matches_hand_value_and_detaches_the_target():
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    z = torch.tensor([[0.0, 2.0], [1.0, 0.0]], requires_grad=True)
    loss = byol_loss(p, z)
    expected = ((2 - 2 * 0.0) + (2 - 2 * (1 / math.sqrt(2)))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert p.grad is not None and z.grad is None


def test_equivariance_gain_by_hand():
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    y_hat = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    y_o = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    gain = equivariance_gain(y, y_hat, y_o)
    assert gain.shape == (2,)
    assert torch.allclose(gain, torch.tensor([1.0, 1 / math.sqrt(2) - 1.0]))


# ---------------------------------------------------------------------------- minima, symmetries


def test_perfect_alignment_gives_the_minimum():
    n, t = 3, 0.5
    z = torch.eye(2 * n)[:n] * 3.0                             # orthogonal, aligned views
    best = nt_xent(z, z, t)
    assert best.item() == pytest.approx(math.log(1 + (2 * n - 2) * math.exp(-1 / t)), rel=1e-6)
    for seed in range(3):
        assert nt_xent(z, z + 0.3 * rand(n, 2 * n, seed=seed), t) > best
    y = torch.eye(4 * n)[: 2 * n]
    y_1, y_2 = y[:n], y[n:]
    best_equi = equivariance_loss(y_1, y_2, y_1, y_2, 0.2)
    expected = math.log(1 + (4 * n - 2) * math.exp(-1 / 0.2))
    assert best_equi.item() == pytest.approx(expected, rel=1e-5)
    assert equivariance_loss(y_1, y_2, y_1 + 0.3 * rand(n, 4 * n), y_2, 0.2) > best_equi
    z = rand(5, 8)
    assert byol_loss(2.5 * z, z).item() == pytest.approx(0.0, abs=1e-6)   # scale invariant
    assert byol_loss(-z, z).item() == pytest.approx(4.0, abs=1e-6)


def test_batch_permutation_and_view_swap_leave_the_losses_unchanged():
    z_1, z_2 = rand(5, 8, seed=1), rand(5, 8, seed=2)
    perm = torch.tensor([3, 0, 4, 1, 2])
    loss = nt_xent(z_1, z_2)
    assert torch.allclose(nt_xent(z_1[perm], z_2[perm]), loss, atol=1e-6)
    assert torch.allclose(nt_xent(z_2, z_1), loss, atol=1e-6)
    ys = [rand(5, 8, seed=s) for s in range(4)]
    equi = equivariance_loss(*ys)
    assert torch.allclose(equivariance_loss(*(y[perm] for y in ys)), equi, atol=1e-6)
    assert torch.allclose(equivariance_loss(ys[1], ys[0], ys[3], ys[2]), equi, atol=1e-6)


def test_mismatched_pairs_cost_more():
    z = torch.eye(8)[:4]
    perm = torch.tensor([1, 0, 3, 2])
    assert nt_xent(z, z[perm]) > nt_xent(z, z) + 1.0         # positives are now wrong
    y = torch.eye(16)[:8]
    y_1, y_2 = y[:4], y[4:]
    assert equivariance_loss(y_1, y_2, y_1, y_2) + 1.0 < equivariance_loss(y_1, y_2, y_2, y_1)
    assert equivariance_loss(y_1, y_2, y_1[perm], y_2) > equivariance_loss(y_1, y_2, y_1, y_2)


def test_temperature_sharpens_the_loss():
    z = torch.eye(6)[:3]
    low, high = nt_xent(z, z, 0.1), nt_xent(z, z, 1.0)
    assert low < high                                          # aligned: colder is lower
    z_1, z_2 = rand(4, 6, seed=3), rand(4, 6, seed=4)
    for t in (0.05, 0.5, 2.0):
        assert nt_xent(z_1, z_2, t).item() == pytest.approx(ref_nt_xent(z_1, z_2, t), rel=1e-5)
    assert inspect.signature(nt_xent).parameters["temperature"].default == 0.5
    assert inspect.signature(equivariance_loss).parameters["temperature"].default == 0.2
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(z_1, z_2, 0.0)


def test_shape_errors_name_the_arguments():
    with pytest.raises(ValueError, match="z_1 and z_2"):
        nt_xent(rand(3, 4), rand(2, 4))
    with pytest.raises(ValueError, match="y_hat_1"):
        equivariance_loss(rand(3, 4), rand(3, 4), rand(3, 5), rand(3, 4))
    with pytest.raises(ValueError, match="z_target"):
        byol_loss(rand(3, 4), rand(3, 2))


# ---------------------------------------------------------------------------- precision


def test_logits_are_fp32_under_bf16_autocast():
    z_1, z_2 = rand(16, 64, seed=5).bfloat16(), rand(16, 64, seed=6).bfloat16()
    ref = ref_nt_xent(z_1.float(), z_2.float(), 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nt_xent(z_1, z_2, 0.1)
        equi = equivariance_loss(z_1, z_2, z_2, z_1, 0.2)
        naive_q = F.normalize(torch.cat([z_1, z_2]), dim=1)
        naive_logits = naive_q @ naive_q.T / 0.1               # what autocast would do
    assert loss.dtype == torch.float32 and equi.dtype == torch.float32
    assert loss.item() == pytest.approx(ref, abs=1e-5)
    ref_equi = ref_equivariance(*(x.float() for x in (z_1, z_2, z_2, z_1)), 0.2)
    assert equi.item() == pytest.approx(ref_equi, abs=1e-5)
    # the test can tell: bf16 logits would be off by far more than the tolerance above
    exact = torch.cat([z_1, z_2]).double()
    exact = F.normalize(exact, dim=1) @ F.normalize(exact, dim=1).T / 0.1
    assert naive_logits.dtype == torch.bfloat16
    assert (naive_logits.double() - exact).abs().max() > 1e-3


# ---------------------------------------------------------------------------- equimod_loss


def fake_output(n=4, d=6, equimod=True, byol=False):
    v = iter(rand(n, d, seed=s) for s in range(20))
    out = SimpleNamespace(z_1=next(v), z_2=next(v), p_1=None, p_2=None, target_z_1=None,
                          target_z_2=None, y_o=None, y_1=None, y_2=None, y_hat_1=None,
                          y_hat_2=None)
    if byol:
        out.p_1, out.p_2, out.target_z_1, out.target_z_2 = next(v), next(v), next(v), next(v)
    if equimod:
        out.y_o, out.y_1, out.y_2, out.y_hat_1, out.y_hat_2 = (next(v) for _ in range(5))
    return out


def test_equimod_loss_simclr_combines_both_terms():
    out = fake_output()
    parts = equimod_loss(out, "simclr", lam=0.5, temperature_inv=0.3, temperature_equi=0.1)
    assert set(parts) == {"loss", "inv", "equi", "inv_top1", "inv_chance", "equi_top1", "equi_chance"}
    assert torch.allclose(parts["inv"], nt_xent(out.z_1, out.z_2, 0.3))
    assert torch.allclose(parts["equi"],
                          equivariance_loss(out.y_1, out.y_2, out.y_hat_1, out.y_hat_2, 0.1))
    assert torch.allclose(parts["loss"], parts["inv"] + 0.5 * parts["equi"])
    assert torch.allclose(equimod_loss(out, "simclr", lam=0.0)["loss"],
                          nt_xent(out.z_1, out.z_2, 0.5))


def test_equimod_loss_without_equivariance_branch_has_zero_equi():
    out = fake_output(equimod=False)
    parts = equimod_loss(out, "simclr")
    assert parts["equi"].item() == 0.0 and torch.equal(parts["loss"], parts["inv"])


def test_equimod_loss_byol_is_symmetric_regression():
    out = fake_output(byol=True)
    parts = equimod_loss(out, "byol")
    inv = byol_loss(out.p_1, out.target_z_2) + byol_loss(out.p_2, out.target_z_1)
    assert torch.allclose(parts["inv"], inv)
    assert torch.allclose(parts["loss"], inv + parts["equi"])
    with pytest.raises(ValueError, match="base"):
        equimod_loss(out, "moco")


def test_diagnostics_give_the_losses_a_scale():
    n = 8
    out = fake_output(n=n, d=16)
    parts = equimod_loss(out, "simclr")
    # chance lines: log(2N - 1) and log(4N - 1), the loss of embeddings that know nothing
    assert parts["inv_chance"].item() == pytest.approx(math.log(2 * n - 1))
    assert parts["equi_chance"].item() == pytest.approx(math.log(4 * n - 1))
    collapsed = torch.ones(n, 16)  # every vector equal: the loss sits exactly on the chance line
    assert nt_xent(collapsed, collapsed).item() == pytest.approx(math.log(2 * n - 1), abs=1e-5)
    # top-1: random vectors find their partner about by chance, aligned pairs always
    assert parts["inv_top1"].item() < 0.5
    out.z_2 = out.z_1 + 0.01 * rand(n, 16, seed=99)
    out.y_hat_1, out.y_hat_2 = out.y_1.clone(), out.y_2.clone()
    aligned = equimod_loss(out, "simclr")
    assert aligned["inv_top1"].item() == 1.0 and aligned["equi_top1"].item() == 1.0


def test_positive_top1_counts_anchors_whose_partner_is_nearest():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 4.0], [2.0, 1.0, 0.0]])
    assert positive_top1(logits, torch.tensor([1, 0, 0])).item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        info_nce_chance(0)


def test_gather_without_distributed_is_the_local_loss():
    z_1, z_2 = rand(4, 6, seed=1), rand(4, 6, seed=2)
    assert torch.equal(nt_xent(z_1, z_2, gather=True), nt_xent(z_1, z_2, gather=False))


# ---------------------------------------------------------------------------- two processes

WORLD, LOCAL_N, DIM = 2, 3, 5


def _global_batch():
    """Global batch of WORLD * LOCAL_N images: z_1, z_2, y_1, y_2, y_hat_1, y_hat_2."""
    return [rand(WORLD * LOCAL_N, DIM, seed=10 + s) for s in range(6)]


def _worker(rank, port, out_dir):
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
        timeout=timedelta(seconds=60))
    rows = slice(rank * LOCAL_N, (rank + 1) * LOCAL_N)
    local = [x[rows].clone().requires_grad_(True) for x in _global_batch()]
    inv = nt_xent(local[0], local[1], 0.5)
    equi = equivariance_loss(*local[2:], 0.2)
    (inv + equi).backward()
    torch.save({"inv": inv.detach(), "equi": equi.detach(),
                "grads": [x.grad for x in local]}, f"{out_dir}/rank{rank}.pt")
    leave_process_group()


@pytest.mark.skipif(not (torch.distributed.is_available()
                         and torch.distributed.is_gloo_available()), reason="needs gloo")
def test_gathered_losses_equal_the_single_process_global_batch(tmp_path):
    """Each process: its anchors against all 2*WORLD*N (or 4*WORLD*N) vectors.

    Mean of the per-process losses = the loss of the whole batch in one process; the
    gradient each process receives (its own loss plus, through all_gather, the others')
    = WORLD * the single-process gradient, which DDP's averaging divides back.
    """
    context = torch.multiprocessing.spawn(
        _worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("distributed workers did not finish in time")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    full = [x.clone().requires_grad_(True) for x in _global_batch()]
    inv = nt_xent(full[0], full[1], 0.5)
    equi = equivariance_loss(*full[2:], 0.2)
    (inv + equi).backward()

    assert torch.stack([r["inv"] for r in results]).mean().item() == pytest.approx(
        inv.item(), rel=1e-5)
    assert torch.stack([r["equi"] for r in results]).mean().item() == pytest.approx(
        equi.item(), rel=1e-5)
    for rank, result in enumerate(results):
        rows = slice(rank * LOCAL_N, (rank + 1) * LOCAL_N)
        for got, x in zip(result["grads"], full):
            assert torch.allclose(got / WORLD, x.grad[rows], atol=1e-6)
