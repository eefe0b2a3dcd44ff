"""A split invariant / equivariant space: half of z invariant, half predicted from the other view (SIE).

Garrido et al., ICML 2023, "Self-supervised learning of Split Invariant Equivariant representations"
(SIE; code facebookresearch/SIE). The idea in our words: an invariance loss asks the two views of an
image to land on one point, so the network forgets what the augmentations changed. SIE keeps both:
it cuts the embedding in two parts. The first part is trained invariant, as usual. The second part
must *move* with the augmentation, in a way that can be predicted: from view 1's part and the
relative augmentation parameters d_12 (how view 1's augmentation differs from view 2's), a
hypernetwork makes a k x k matrix W(d_12) that maps view 1's part to view 2's. The predictor is
linear in the embedding; only its matrix depends on d, so the augmentations must act on that part
as linear maps (a "group action", as EquiMod's predictor hopes to learn with a general MLP).

With z_k = g(h_k) the SimCLR projection of view k (N, Z), cut into z_k = [z_inv_k; z_eq_k]
(Z - k and k columns, k = ``cfg.split_dim``):

    d_12    = augself_targets(t_1, t_2) / s      (N, 8)  standardised relative crop and colour parameters
                                                         (augself.py: view 1 minus view 2, std 1 per column)
    W(d)    = reshape(MLP(d), (k, k))            (N, k, k) one matrix per image (the hypernetwork)
    z_hat_2 = W(d_12) z_eq_1,   z_hat_1 = W(-d_12) z_eq_2      (N, k) each: both directions
    L = NT-Xent(z_inv_1, z_inv_2) + w * InfoNCE([z_eq_1; z_eq_2], [z_hat_1; z_hat_2])

w = ``cfg.split_weight``; NT-Xent at ``cfg.temperature_inv``; the InfoNCE is losses.equivariance_loss
at ``cfg.temperature_equi``: each z_eq_k must find its own prediction among the 4N - 1 other vectors
(other images' parts and predictions, and the same image's other view: a part that does not move
with the augmentation cannot tell its prediction from the other view). The MLP: Linear-ReLU,
Linear-ReLU, Linear (``cfg.split_hidden`` wide, k^2 outputs), biases on, so d = 0 (the same
augmentation twice) gives one fixed, learnt matrix W(0).

What is shared: the backbone's h (the representation every probe reads) and the projector g; the
split is in z only. So the probes on h see one representation that must serve both parts: it
must keep what z_eq needs to move predictably (crop, colour) beside what z_inv needs. There is
no "invariant half of h" to probe apart; probing z_inv or z_eq alone is a question about z.

Deviations from SIE, said: SIE splits the backbone's representation itself (ResNet-18's 512 as
256 + 256, each half with its own projector), so its halves of h can be probed apart; ours
splits z of one projector. SIE's losses are VICReg's (MSE between the views' invariant parts,
MSE between prediction and target at 0.45 times the invariance MSE's weight, variance and
covariance terms on the whole embedding and on the predictions); we keep our SimCLR base and an
InfoNCE, as EquiMod's. SIE's
recipe uses a linear hypernetwork without bias (W(d) = A d, so W(0) = 0); ours is a small MLP with
biases. SIE's d is the relative 3D rotation of the object (a quaternion, plus colour differences in
a variant); ours is AugSelf's relative crop and colour parameters (flip folded into the crop
centre; grayscale and blur not in d). The same projection width as SimCLR (z_dim 128 at
``cpu-live``): z_inv has 64 columns where SimCLR's NT-Xent reads 128.

    cfg = TrainConfig.preset("cpu-live", objective="split", equimod=False)   # SimCLR + a split z
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import AugmentationConfig
from .augself import AUGSELF_COLUMNS, augself_scale, augself_targets
from .config import AUGSELF_GROUPS, TrainConfig
from .losses import equivariance_gain, equivariance_logits, info_nce_chance, positive_top1
from .models import EquiModModel, ModelOutput
from .objectives import Batch, SelfSupervised

__all__ = ["Hypernetwork", "SplitSpace"]


class Hypernetwork(nn.Module):
    """SIE's hypernetwork predictor: ``z (N, k)``, ``d (N, G)`` -> ``W(d) z (N, k)``.

    ``matrices(d)``: ``(N, G) -> (N, k, k)``, an MLP (Linear-ReLU, Linear-ReLU, Linear to k^2,
    ``hidden`` wide, with biases) reshaped to one matrix per row of d.
    """

    def __init__(self, n_params: int, dim: int, hidden: int = 64):
        super().__init__()
        self.dim = dim
        self.layers = nn.Sequential(nn.Linear(n_params, hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, dim * dim))

    def matrices(self, d: Tensor) -> Tensor:
        return self.layers(d).view(-1, self.dim, self.dim)

    def forward(self, z: Tensor, d: Tensor) -> Tensor:
        weights = self.matrices(d)
        return torch.bmm(weights, z.to(weights.dtype).unsqueeze(2)).squeeze(2)  # row i: W(d_i) @ z_i


class SplitSpace(SelfSupervised):
    """SimCLR whose z is split: z_inv trained invariant, z_eq predicted by a hypernetwork (module docstring).

    ``hypernetwork``: the Hypernetwork, trained and checkpointed with the model (the checkpoint's
    "heads"). Losses: SimCLR's on z_inv ("inv", "inv_top1", "inv_chance"; "equi" 0), "split_equi"
    (the InfoNCE), "loss" = inv + ``cfg.split_weight`` * split_equi (checked finite), and the
    diagnostics "split_top1" (the fraction of z_eq_k whose own prediction is the nearest of the
    4N - 1 candidates), "split_chance" = log(4N - 1) and "split_gain" = cos(z_eq_2, z_hat_2) -
    cos(z_eq_2, z_eq_1), both directions averaged: > 0 when the prediction beats "nothing moved".
    """

    checked = ("loss", "inv", "split_equi")

    def __init__(self, cfg: TrainConfig, model: EquiModModel, aug: Optional[AugmentationConfig] = None,
                 n_classes: Optional[int] = None):
        if cfg.equimod or cfg.base != "simclr":
            raise ValueError(f"TrainConfig.equimod = {cfg.equimod}, base = {cfg.base!r}: the split objective "
                             f"splits SimCLR's z and has no EquiMod module; set base='simclr', equimod=False "
                             f"(--no-equimod)")
        if not 0 < cfg.split_dim < cfg.z_dim:
            raise ValueError(f"TrainConfig.split_dim = {cfg.split_dim}: must lie in [1, z_dim={cfg.z_dim})")
        super().__init__(cfg, model, aug, n_classes)
        self.aug = aug if aug is not None else cfg.augmentation()
        device = next(model.parameters()).device
        n_params = sum(len(AUGSELF_COLUMNS[name]) for name in AUGSELF_GROUPS)  # 8: crop and colour
        self.hypernetwork = Hypernetwork(n_params, cfg.split_dim, cfg.split_hidden).to(device)
        self.register_buffer("scale", augself_scale(self.aug, AUGSELF_GROUPS).to(device), persistent=False)

    @property
    def label(self) -> str:
        return "simclr+split"

    def relative_parameters(self, batch: Batch) -> Tensor:
        """``(N, 8) float``: d_12, the standardised relative crop and colour parameters of the two views."""
        return augself_targets(batch.params_1, batch.params_2, self.aug, AUGSELF_GROUPS) / self.scale

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, Z) -> (N, Z - k), (N, k)``: z_inv (the first columns) and z_eq (the last k)."""
        return z[:, :-self.cfg.split_dim], z[:, -self.cfg.split_dim:]

    def forward(self, model: nn.Module, batch: Batch) -> tuple[ModelOutput, Tensor, Tensor]:
        """The model's ModelOutput and the predictions ``z_hat_1, z_hat_2 (N, k)`` of each view's z_eq."""
        out = super().forward(model, batch)
        d = self.relative_parameters(batch)
        z_eq_1, z_eq_2 = self.split(out.z_1)[1], self.split(out.z_2)[1]
        z_hat_2, z_hat_1 = self.hypernetwork(torch.cat([z_eq_1, z_eq_2]), torch.cat([d, -d])).chunk(2)
        return out, z_hat_1, z_hat_2

    def losses(self, out, batch: Batch) -> dict[str, Tensor]:
        out, z_hat_1, z_hat_2 = out
        (z_inv_1, z_eq_1), (z_inv_2, z_eq_2) = self.split(out.z_1), self.split(out.z_2)
        losses = super().losses(ModelOutput(out.h, z_inv_1, z_inv_2), batch)  # NT-Xent on z_inv
        logits, target = equivariance_logits(z_eq_1, z_eq_2, z_hat_1, z_hat_2, self.cfg.temperature_equi)
        losses["split_equi"] = F.cross_entropy(logits, target)
        losses["loss"] = losses["inv"] + self.cfg.split_weight * losses["split_equi"]
        with torch.no_grad():
            losses["split_top1"] = positive_top1(logits, target)
            losses["split_chance"] = torch.full((), info_nce_chance(logits.shape[1] - 1), device=logits.device)
            losses["split_gain"] = torch.cat([equivariance_gain(z_eq_2, z_hat_2, z_eq_1),
                                              equivariance_gain(z_eq_1, z_hat_1, z_eq_2)]).mean()
        return losses
