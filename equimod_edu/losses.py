"""Losses of EquiMod: NT-Xent (SimCLR), BYOL's regression, and the equivariance InfoNCE.

    L = L_inv + lambda * L_equi          (paper, total loss; lambda = 1)

- L_inv: ``nt_xent`` on (z_1, z_2) for a SimCLR base, or the symmetric ``byol_loss``
  of the online predictions against the target projections for a BYOL base;
- L_equi: ``equivariance_loss``, an InfoNCE in which the prediction y_hat_k of an image's
  view must find the true embedding y_k among the 4N vectors of the batch.

Similarities and logits are always computed in float32, even under ``torch.autocast``: with
a temperature of 0.2 a bfloat16 cosine (8 bits of mantissa) would move logits by ~0.02.

With ``torch.distributed`` initialised, the contrastive losses gather the vectors of every
process *with gradients* (``torch.distributed.nn.functional.all_gather``) to use them as
negatives; each process averages over its own anchors. All processes must hold the same
number of samples. Under DistributedDataParallel (which averages gradients) this gives the
gradient of the loss over the global batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "nt_xent",
    "equivariance_loss",
    "equivariance_logits",
    "byol_loss",
    "equimod_loss",
    "equivariance_gain",
    "positive_top1",
    "info_nce_chance",
]


# --------------------------------------------------------------------------------------------
# Shared machinery
# --------------------------------------------------------------------------------------------


def _distributed() -> bool:
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def _gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """All processes' rows of x, gradients flowing back to each owner.

    ``(M, D) -> (world_size * M, D)`` and the offset of this process's rows (rank * M).
    """
    from torch.distributed.nn.functional import all_gather

    rank = torch.distributed.get_rank()
    return torch.cat(all_gather(x), dim=0), rank * x.shape[0]


def _check_pair(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.dim() != 2:
        raise ValueError(f"{name_a} must have shape (N, D), got {tuple(a.shape)}")
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _info_nce_logits(vectors: Tensor, positive: Tensor, temperature: float,
                     gather: bool) -> tuple[Tensor, Tensor]:
    """The logits and targets of an InfoNCE; every vector but self and the positive is a negative.

    ``vectors (M, D)`` are this process's anchors; ``positive (M,) long`` the local index of
    each anchor's positive. Returns ``logits (M, W*M) float32`` (``cos / temperature``, self
    masked to -inf; W processes under torch.distributed with ``gather``) and ``target (M,)``,
    the column of each anchor's positive.
    """
    with torch.autocast(device_type=vectors.device.type, enabled=False):
        q = F.normalize(vectors.float(), dim=1)                     # (M, D)
        keys, offset = (q, 0)
        if gather and _distributed():
            keys, offset = _gather_with_grad(q)                     # (W*M, D)
        logits = q @ keys.T / temperature                           # (M, W*M)
        rows = torch.arange(q.shape[0], device=q.device)
        columns = torch.arange(logits.shape[1], device=q.device)
        is_self = columns[None, :] == (rows + offset)[:, None]      # (M, W*M): no tensor made from host data
        return logits.masked_fill(is_self, float("-inf")), positive + offset


def positive_top1(logits: Tensor, target: Tensor) -> Tensor:
    """Fraction of anchors whose positive is their nearest candidate: ``() float32``.

    The training diagnostic of a contrastive loss: 1 / (number of candidates) by chance, 1 when
    every view finds its partner. ``logits (M, K)``, ``target (M,) long``.
    """
    return (logits.detach().argmax(dim=1) == target).float().mean()


def info_nce_chance(n_candidates: int) -> float:
    """The InfoNCE of an embedding that knows nothing: log(number of candidates).

    With all similarities equal, the softmax puts 1 / K on the positive, so the loss is log K:
    log(2N - 1) for NT-Xent on a batch of N pairs, log(4N - 1) for the equivariance loss.
    A loss that stays near this line has learned nothing.
    """
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
    return math.log(n_candidates)


# --------------------------------------------------------------------------------------------
# The losses
# --------------------------------------------------------------------------------------------


def nt_xent(z_1: Tensor, z_2: Tensor, temperature: float = 0.5, gather: bool = True) -> Tensor:
    """SimCLR's NT-Xent (normalised temperature-scaled cross-entropy), Chen et al. 2020, eq. 1.

    For the 2N vectors {z_1^i} u {z_2^i} and s(a, b) = cos(a, b) / temperature, the loss of
    anchor z_1^i is  -log exp(s(z_1^i, z_2^i)) / sum_{k != anchor} exp(s(z_1^i, z^k)):
    the other view of the same image must be found among all other 2N - 1 vectors. The loss is
    the mean over the 2N anchors (both views are anchors).

    Shapes: ``z_1, z_2 (N, D) float -> () float32``. ``gather``: under torch.distributed, use
    the other processes' vectors as extra negatives (with gradients).

    Example (perfectly aligned orthogonal pairs: -log e^2 / (e^2 + 2) for N = 2, T = 0.5)::

        >>> z = torch.eye(2)
        >>> round(nt_xent(z, z).item(), 4)
        0.2395
    """
    return F.cross_entropy(*_nt_xent_logits(z_1, z_2, temperature, gather))


def _nt_xent_logits(z_1: Tensor, z_2: Tensor, temperature: float, gather: bool) -> tuple[Tensor, Tensor]:
    _check_pair("z_1", z_1, "z_2", z_2)
    _check_temperature(temperature)
    n = z_1.shape[0]
    index = torch.arange(n, device=z_1.device)
    positive = torch.cat([index + n, index])                       # z_1^i <-> z_2^i
    return _info_nce_logits(torch.cat([z_1, z_2]), positive, temperature, gather)


def equivariance_loss(y_1: Tensor, y_2: Tensor, y_hat_1: Tensor, y_hat_2: Tensor,
                      temperature: float = 0.2, gather: bool = True) -> Tensor:
    """EquiMod's equivariance loss: InfoNCE over the 4N vectors [y_1; y_2; y_hat_1; y_hat_2].

    The positive pair of an anchor is (y_k^i, y_hat_k^i): the embedding of view k of image i
    and its prediction u([y_o^i ; p(t_k^i)]) from the original image. Every other vector of
    the 4N (other images, the other view of the same image, other predictions) is a negative;
    the anchor itself is excluded. Cosine similarity / temperature (0.2 in the paper), mean
    over the 4N anchors. This is NT-Xent applied to ``[y_1; y_2]`` against
    ``[y_hat_1; y_hat_2]``, as in the official code.

    Shapes: four ``(N, D) float -> () float32``.

    Example (predictions exactly right, all 4 directions orthogonal otherwise)::

        >>> y = torch.eye(4)
        >>> loss = equivariance_loss(y[:2], y[2:], y[:2], y[2:])
        >>> round(loss.item(), 4)   # -log e^5 / (e^5 + 6)
        0.0396
    """
    return F.cross_entropy(*equivariance_logits(y_1, y_2, y_hat_1, y_hat_2, temperature, gather))


def equivariance_logits(y_1: Tensor, y_2: Tensor, y_hat_1: Tensor, y_hat_2: Tensor, temperature: float,
                        gather: bool = True) -> tuple[Tensor, Tensor]:
    """The equivariance loss before its mean: ``logits (4N, 4N) float32`` (self masked) and ``target (4N,)``.

    Rows are the anchors [y_1; y_2; y_hat_1; y_hat_2]; ``F.cross_entropy(logits, target,
    reduction="none")`` is each anchor's loss (loss_exercises.loss_floor_toy reads them).
    """
    _check_pair("y_1", y_1, "y_2", y_2)
    _check_pair("y_1", y_1, "y_hat_1", y_hat_1)
    _check_pair("y_2", y_2, "y_hat_2", y_hat_2)
    _check_temperature(temperature)
    n2 = 2 * y_1.shape[0]
    index = torch.arange(n2, device=y_1.device)
    positive = torch.cat([index + n2, index])                      # y_k^i <-> y_hat_k^i
    vectors = torch.cat([y_1, y_2, y_hat_1, y_hat_2])
    return _info_nce_logits(vectors, positive, temperature, gather)


def byol_loss(p: Tensor, z_target: Tensor) -> Tensor:
    """BYOL's regression loss: ||p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z), mean over the batch.

    ``p`` is the online prediction of one view, ``z_target`` the target projection of the
    other view; the target is detached (no gradient flows into it). Grill et al. 2020, eq. 2.

    Shapes: ``p, z_target (N, D) float -> () float32``.

    Example::

        >>> z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> byol_loss(3 * z, z).item(), byol_loss(-z, z).item()
        (0.0, 4.0)
    """
    _check_pair("p", p, "z_target", z_target)
    with torch.autocast(device_type=p.device.type, enabled=False):
        cos = F.cosine_similarity(p.float(), z_target.detach().float(), dim=1)
        return (2.0 - 2.0 * cos).mean()


def equimod_loss(out, base: str, lam: float = 1.0, temperature_inv: float = 0.5,
                 temperature_equi: float = 0.2, gather: bool = True) -> dict[str, Tensor]:
    """Total loss L = L_inv + lam * L_equi from a ``ModelOutput``.

    - ``base="simclr"``: L_inv = nt_xent(z_1, z_2, temperature_inv);
    - ``base="byol"``: L_inv = byol_loss(p_1, target_z_2) + byol_loss(p_2, target_z_1)
      (symmetrised, as in BYOL and the official code);
    - L_equi = equivariance_loss(y_1, y_2, y_hat_1, y_hat_2, temperature_equi), a zero tensor
      when the model has no equivariance branch (``out.y_1 is None``).

    Returns ``{"loss", "inv", "equi"}``, each a ``() float32`` tensor, and the diagnostics that
    give those numbers a scale: ``inv_chance`` = log(2N - 1) and ``inv_top1`` (SimCLR: the
    fraction of views whose partner is their nearest candidate, chance 1 / (2N - 1)), and with
    the module ``equi_chance`` = log(4N - 1) and ``equi_top1`` (the fraction of y_k whose own
    prediction is the nearest of the 4N - 1 candidates). N counts every process's images.
    """
    diagnostics: dict[str, Tensor] = {}
    if base == "simclr":
        logits, target = _nt_xent_logits(out.z_1, out.z_2, temperature_inv, gather)
        inv = F.cross_entropy(logits, target)
        diagnostics["inv_top1"] = positive_top1(logits, target)
        diagnostics["inv_chance"] = torch.full((), info_nce_chance(logits.shape[1] - 1), device=logits.device)
    elif base == "byol":
        if out.p_1 is None or out.target_z_1 is None:
            raise ValueError("base='byol' needs p_1, p_2, target_z_1, target_z_2 in the output")
        inv = byol_loss(out.p_1, out.target_z_2) + byol_loss(out.p_2, out.target_z_1)
    else:
        raise ValueError(f"base must be 'simclr' or 'byol', got {base!r}")
    if out.y_1 is None:
        equi = torch.zeros((), device=inv.device, dtype=inv.dtype)
    else:
        logits, target = equivariance_logits(out.y_1, out.y_2, out.y_hat_1, out.y_hat_2,
                                              temperature_equi, gather)
        equi = F.cross_entropy(logits, target)
        diagnostics["equi_top1"] = positive_top1(logits, target)
        diagnostics["equi_chance"] = torch.full((), info_nce_chance(logits.shape[1] - 1), device=logits.device)
    return {"loss": inv + lam * equi, "inv": inv, "equi": equi, **diagnostics}


def equivariance_gain(y: Tensor, y_hat: Tensor, y_o: Tensor) -> Tensor:
    """How much better the prediction is than "nothing moved": cos(y, y_hat) - cos(y, y_o).

    Positive when the module predicts the displacement of the embedding caused by the
    augmentation better than invariance would (predicting y_o itself). Per sample.

    Shapes: three ``(N, D) float -> (N,) float32``.

    Example::

        >>> y = torch.tensor([[1.0, 0.0]]); y_o = torch.tensor([[0.0, 1.0]])
        >>> equivariance_gain(y, y, y_o)
        tensor([1.])
    """
    _check_pair("y", y, "y_hat", y_hat)
    _check_pair("y", y, "y_o", y_o)
    with torch.autocast(device_type=y.device.type, enabled=False):
        y, y_hat, y_o = y.float(), y_hat.float(), y_o.float()
        return F.cosine_similarity(y, y_hat, dim=1) - F.cosine_similarity(y, y_o, dim=1)
