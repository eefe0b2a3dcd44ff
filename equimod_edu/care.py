"""CARE: an objective asking each augmentation to act on the embeddings as a rotation.

Gupta et al., ICLR 2024, "Structuring Representation Geometry with Rotationally Equivariant
Contrastive Learning" (CARE: Contrastive Augmentation-induced Rotational Equivariance). The idea
in our words: an invariance loss asks the two views of an image to land on the same point. CARE
asks for a structure instead: if one augmentation is applied to many images, their embeddings
should move together, as by a rotation (an orthogonal map R: z -> R z) of the whole space, which
keeps every angle between them. No map is learnt or even written down: a batch is cut into groups
whose images all share one augmentation per view (``Needs.group_size``: the engine draws once per
group and per view, augment.share_within_groups), and within a group the cosine similarities of
the view-3 embeddings must equal those of the view-4 embeddings. Equal Gram matrices are exactly
what an orthogonal map between the two sets preserves, so the loss is zero when one exists. As in
the paper, the base loss keeps its own pair x_1, x_2 (one independent draw per image, the very
views SimCLR would get), and a *second* pair x_3, x_4, shared within groups, is made for CARE
alone (``Needs.grouped_pair``). With the base loss of the run (and EquiMod when ``cfg.equimod``),
on the K groups of n images:

    L = L_base(x_1, x_2) + w * 1/K sum_k 2/n || Z_3k Z_3k^T - Z_4k Z_4k^T ||_F^2
    Z_vk = normalize(z(x_v)) of the n images of group k, view v      (n, D) unit rows

w = ``cfg.care_weight``, n = ``cfg.care_group_size``; z: the invariance projector's output (SimCLR's
z, BYOL's online projection) on the backbone's features, as the original uses the same normalised
output as its InfoNCE. The diagonal of each Gram matrix is 1 for unit rows: the original masks
it, which changes nothing. No parameters are added.

Two modes (``cfg.care_pair``), with their step cost against SimCLR's (``cpu-live``, one CPU thread,
``benchmarks/train_step.py --mode variants --variants simclr,care,care-shared``: 2.03x and 0.97x
on a loaded machine): "separate" (default, the paper's design): four views through the backbone a
step, about twice a SimCLR step; "shared": x_3, x_4 are x_1, x_2 themselves, drawn shared within
groups, so one pair feeds both losses at about a SimCLR step's cost, but the base loss then sees
only K augmentation pairs a batch (4 at batch 64): an easier contrastive task inside a group
(compare variant "care-shared").

Deviations from the paper, said: its CIFAR-10 recipe (batch 256 in 16 groups of 16, weight 0.03)
keeps the group of 16 and the weight; at our batch of 64 that is 4 groups. As we read the
original CIFAR code, its outer vmap (randomness "same") gives every group of a batch the same
draw; here each group has its own. The original runs each of its four views through the network
alone (BatchNorm statistics of N images); here x_1, x_2 go through in one forward, as for every
objective of the loop (with x_o under EquiMod), and x_3, x_4 in a second.

    cfg = TrainConfig.preset("cpu-live", objective="care", equimod=False)   # SimCLR + CARE
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import AugmentationConfig
from .config import TrainConfig
from .models import EquiModModel, ModelOutput
from .objectives import Batch, SelfSupervised

__all__ = ["CARE", "care_loss"]


def care_loss(z_1: Tensor, z_2: Tensor, group_size: int) -> Tensor:
    """CARE's Gram-matching loss: ``(N, D), (N, D) -> () float32``, N a multiple of group_size.

    Rows are cut into contiguous groups of ``group_size`` (the images sharing one augmentation per
    view); each row is normalised; per group, 2/n times the squared Frobenius norm of the
    difference of the two views' Gram matrices (cosine similarities); the mean over groups.
    Computed in float32 whatever the autocast; 0 when, in every group, view 2 = view 1 times an
    orthogonal matrix (of that group).
    """
    n, dim = z_1.shape
    if z_2.shape != z_1.shape or n % group_size:
        raise ValueError(f"care_loss: z_1 {tuple(z_1.shape)} and z_2 {tuple(z_2.shape)} must be equal, "
                         f"with rows a multiple of group_size = {group_size}")
    with torch.autocast(z_1.device.type, enabled=False):
        groups_1 = F.normalize(z_1.float(), dim=1).view(-1, group_size, dim)  # (K, n, D)
        groups_2 = F.normalize(z_2.float(), dim=1).view(-1, group_size, dim)
        gram_1 = groups_1 @ groups_1.transpose(1, 2)  # (K, n, n) cosine similarities
        gram_2 = groups_2 @ groups_2.transpose(1, 2)
        return 2 * (gram_1 - gram_2).pow(2).sum(dim=(1, 2)).mean() / group_size


class CARE(SelfSupervised):
    """The run's base (SimCLR or BYOL, with EquiMod when ``cfg.equimod``) plus CARE's Gram matching.

    ``needs.group_size`` = ``cfg.care_group_size``: the Trainer gives every image of a group the same
    augmentation per view, on the extra pair x_3, x_4 (``cfg.care_pair`` "separate",
    ``needs.grouped_pair``) or on x_1, x_2 themselves ("shared"). Losses: the base's on x_1, x_2,
    "care" (care_loss on the projections of x_3, x_4, or of x_1, x_2 when shared; checked finite)
    and "loss" = the base's loss + ``cfg.care_weight`` * care. No trainable head.
    """

    checked = (*SelfSupervised.checked, "care")

    def __init__(self, cfg: TrainConfig, model: EquiModModel, aug: Optional[AugmentationConfig] = None,
                 n_classes: Optional[int] = None):
        super().__init__(cfg, model, aug, n_classes)
        self.separate = cfg.care_pair == "separate"
        self.needs = dataclasses.replace(self.needs, group_size=cfg.care_group_size, grouped_pair=self.separate)

    @property
    def label(self) -> str:
        return f"{super().label}+care"

    def forward(self, model: nn.Module, batch: Batch) -> tuple[ModelOutput, Tensor, Tensor]:
        """The base's ModelOutput and the ``(N, D)`` projections whose Gram matrices are matched.

        "separate": z of x_3 and x_4 (backbone and projector, one more forward of 2N images);
        "shared": the base's z_1, z_2.
        """
        out = super().forward(model, batch)
        if not self.separate:
            return out, out.z_1, out.z_2
        z_3, z_4 = model.projector(model.features(torch.cat([batch.x_3, batch.x_4]))).chunk(2)
        return out, z_3, z_4

    def losses(self, out, batch: Batch) -> dict[str, Tensor]:
        out, z_a, z_b = out
        losses = super().losses(out, batch)
        losses["care"] = care_loss(z_a, z_b, self.cfg.care_group_size)
        losses["loss"] = losses["loss"] + self.cfg.care_weight * losses["care"]
        return losses
