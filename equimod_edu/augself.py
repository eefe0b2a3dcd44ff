"""AugSelf: an objective that asks the backbone how two views differ (an augmentation-aware peer of EquiMod).

Lee et al., NeurIPS 2021, "Improving Transferability of Representations via Augmentation-Aware
Self-Supervision". The idea in our words: an invariance loss (SimCLR, BYOL) teaches the backbone
to forget whatever the augmentations change: where the crop was, how the colours were shifted.
AugSelf keeps that information by a small auxiliary task: from the backbone features of the two
views of an image, h_1 and h_2, an MLP g must tell how the second view's augmentation differs
from the first's. The difference is used, not each view's own parameters, because a single image
cannot say how large or how bright its original was, but two views of it can. With the base
loss of the run (and EquiMod when ``cfg.equimod``):

    L = L_base + w * 1/2 * ( || g([h_1; h_2]) - d_12 ||^2 + || g([h_2; h_1]) + d_12 ||^2 ) / (N G)
    d_12 = augself_targets(t_1, t_2) / s      (N, G): the relative parameters, one row per image,
                                              each column divided by its std s under the run's draws

w = ``cfg.augself_weight``; the pair is used both ways round (the swapped pair predicts -d_12).
The groups of columns in d_12 (``cfg.augself_groups``, ``AUGSELF_COLUMNS``) are the crop (4) and
the colour jitter factors (4). Deviations from the paper, said: one MLP for all groups (the paper
has one per group), plain MSE on standardised targets (the paper's tanh-MSE on unscaled ones), one
weight for all groups, the hue difference taken around the circle. Why standardised: with the
differences only scaled into [-1, 1], a column's variance is about 0.1 and the MSE's gradient is
small beside the NT-Xent's; at weight 1 that AugSelf trained like plain SimCLR (3 seeds at
``cpu-live``: shape 0.633 +- 0.042 against SimCLR's 0.623 +- 0.061, docs/research_log.md).
Dividing each column by its std (``augself_scale``) gives every column variance 1, as EquiMod's
standardised t has.

    cfg = TrainConfig.preset("cpu-live", objective="augself", equimod=False)   # SimCLR + AugSelf
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import AugmentationConfig, AugmentationParams
from .config import AUGSELF_GROUPS, TrainConfig
from .models import EquiModModel, ModelOutput
from .objectives import Batch, SelfSupervised

__all__ = ["AUGSELF_COLUMNS", "AugSelf", "AugSelfHead", "augself_scale", "augself_targets", "crop_geometry"]

#: The columns of augself_targets, per group, in order (one named place for this encoding).
AUGSELF_COLUMNS = {
    "crop": ("centre_y", "centre_x", "height", "width"),
    "colour": ("brightness", "contrast", "saturation", "hue"),
}
assert tuple(AUGSELF_COLUMNS) == AUGSELF_GROUPS


def crop_geometry(params: AugmentationParams) -> Tensor:
    """``(N, 4) float``: each view's crop centre (y, x) and size (height, width), fractions of the image.

    The x-centre is mirrored (x -> 1 - x) when the view is flipped: the flipped view shows its
    crop as if it had been cut from the mirrored image.
    """
    top, left, height, width = params.crop.float().unbind(1)
    centre_x = left + width / 2
    centre_x = torch.where(params.flip, 1 - centre_x, centre_x)
    return torch.stack([top + height / 2, centre_x, height, width], dim=1)


def _colour_difference(params_1: AugmentationParams, params_2: AugmentationParams,
                       aug: AugmentationConfig) -> Tensor:
    """``(N, 4) float``: the jitter factors of view 1 minus view 2, each divided by its largest size.

    A factor drawn in [1 - s, 1 + s] differs by at most 2s between the views: dividing by 2s puts the
    difference in [-1, 1] (a strength of 0 draws no change: the difference is 0, divided by 1). The
    hue shifts are turns on a circle: their difference is wrapped into [-1/2, 1/2) turn, then
    divided by its largest size min(2 * hue, 1/2). A view without jitter holds the identity factors
    (1, 1, 1, 0), so it counts as "no change" with no special case.
    """
    columns = []
    for name in ("brightness", "contrast", "saturation"):
        difference = getattr(params_1, name).float() - getattr(params_2, name).float()
        strength = getattr(aug, name)
        columns.append(difference / (2 * strength if strength > 0 else 1.0))
    hue = params_1.hue.float() - params_2.hue.float()
    hue = torch.remainder(hue + 0.5, 1.0) - 0.5
    columns.append(hue / (min(2 * aug.hue, 0.5) if aug.hue > 0 else 1.0))
    return torch.stack(columns, dim=1)


def augself_targets(params_1: AugmentationParams, params_2: AugmentationParams, aug: AugmentationConfig,
                    groups: Sequence[str] = AUGSELF_GROUPS) -> Tensor:
    """AugSelf's relative parameters d_12: how view 1's augmentation differs from view 2's.

    What the AugSelf head must read off the two views' features [h_1; h_2], so that the backbone
    keeps what the augmentations change (the module docstring). The views of one image with
    parameters t_1 and t_2 (N rows each, AugmentationParams) give ``(N, G) float`` (G = 4 per group,
    in the order of ``groups``, columns ``AUGSELF_COLUMNS``):

    - "crop":   crop_geometry(t_1) - crop_geometry(t_2): the difference of the crop centres (y, x;
                x mirrored in a flipped view) and of the crop sizes (height, width), fractions of the
                image, so each lies in [-1, 1];
    - "colour": (f_1 - f_2) / (2 s_f) for brightness, contrast, saturation (factors f drawn in
                [1 - s_f, 1 + s_f], s_f the strength of ``aug``), and the hue difference wrapped into
                [-1/2, 1/2) turn, divided by min(2 s_hue, 1/2); each lies in [-1, 1].

    Swapping the views negates the targets (up to the hue's wrap at exactly half a turn).
    """
    unknown = [name for name in groups if name not in AUGSELF_COLUMNS]
    if unknown or not groups:
        raise ValueError(f"AugSelf groups {list(groups)}: choose one or more of {AUGSELF_GROUPS}")
    parts = {"crop": lambda: crop_geometry(params_1) - crop_geometry(params_2),
             "colour": lambda: _colour_difference(params_1, params_2, aug)}
    return torch.cat([parts[name]() for name in groups], dim=1)


@functools.lru_cache(maxsize=32)
def _scale(fields: tuple, groups: tuple[str, ...]) -> Tensor:
    aug = AugmentationConfig(*fields)
    generator = torch.Generator().manual_seed(0)
    params_1, params_2 = aug.sample_pair(1 << 15, generator=generator)
    std = augself_targets(params_1, params_2, aug, groups).std(dim=0)
    return torch.where(std > 1e-6, std, torch.ones_like(std))  # a column that never varies stays 0


def augself_scale(aug: AugmentationConfig, groups: Sequence[str] = AUGSELF_GROUPS) -> Tensor:
    """``(G,) float``: each target column's std over 32,768 pairs drawn from ``aug`` (seed 0).

    AugSelf's loss divides the targets by it, so every column has variance 1 (a column that never
    varies, e.g. a strength of 0, is divided by 1 and stays 0). Measured, like augment.encoding_stats,
    on draws of the run's augmentation: the same for every run of one config.
    """
    return _scale(dataclasses.astuple(aug), tuple(groups)).clone()


class AugSelfHead(nn.Module):
    """The AugSelf MLP: ``(N, 2D)`` pairs [h_a; h_b] -> ``(N, G)`` predicted relative parameters.

    Three layers as the paper's: Linear-ReLU, Linear-ReLU, Linear (``hidden`` wide).
    """

    def __init__(self, feature_dim: int, n_targets: int, hidden: int = 512):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(2 * feature_dim, hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, n_targets))

    def forward(self, pairs: Tensor) -> Tensor:
        return self.layers(pairs)


class AugSelf(SelfSupervised):
    """The run's base (SimCLR or BYOL, with EquiMod when ``cfg.equimod``) plus the AugSelf head.

    ``head``: AugSelfHead on the views' backbone features, trained and checkpointed with the model
    (the checkpoint's "heads"). Losses: the base's, "aug" (the symmetrised MSE of the module
    docstring on standardised targets, checked finite) and "loss" = the base's loss +
    ``cfg.augself_weight`` * aug. The MSE of always predicting 0 is 1: "aug" below 1 is learned.
    """

    checked = (*SelfSupervised.checked, "aug")

    def __init__(self, cfg: TrainConfig, model: EquiModModel, aug: Optional[AugmentationConfig] = None,
                 n_classes: Optional[int] = None):
        super().__init__(cfg, model, aug, n_classes)
        self.aug = aug if aug is not None else cfg.augmentation()
        self.groups = tuple(cfg.augself_groups)
        n_targets = sum(len(AUGSELF_COLUMNS[name]) for name in self.groups)
        device = next(model.parameters()).device
        self.head = AugSelfHead(model.feature_dim, n_targets, cfg.augself_hidden).to(device)
        self.register_buffer("scale", augself_scale(self.aug, self.groups).to(device), persistent=False)

    @property
    def label(self) -> str:
        return f"{super().label}+augself"

    def forward(self, model: nn.Module, batch: Batch) -> tuple[ModelOutput, Tensor]:
        """The base's ModelOutput and ``(2N, G)`` predictions: for [h_1; h_2], then for [h_2; h_1]."""
        out = super().forward(model, batch)
        h_1, h_2 = out.h[-2 * batch.x_1.shape[0]:].chunk(2)  # h is [x_o;] x_1; x_2
        pairs = torch.cat([torch.cat([h_1, h_2], dim=1), torch.cat([h_2, h_1], dim=1)])
        return out, self.head(pairs)

    def losses(self, out, batch: Batch) -> dict[str, Tensor]:
        out, predicted = out
        losses = super().losses(out, batch)
        targets = augself_targets(batch.params_1, batch.params_2, self.aug, self.groups) / self.scale
        losses["aug"] = F.mse_loss(predicted.float(), torch.cat([targets, -targets]))
        losses["loss"] = losses["loss"] + self.cfg.augself_weight * losses["aug"]
        return losses
