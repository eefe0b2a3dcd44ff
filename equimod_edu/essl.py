"""E-SSL: an objective that asks the backbone which way up a small view is (an augmentation-aware peer of EquiMod).

Dangovski et al., ICLR 2022, "Equivariant Contrastive Learning" (code: rdangovs/essl). The idea in
our words: an invariance loss (SimCLR, BYOL) makes the features of an image the same under every
augmentation it uses. Some transformations hurt when forgotten: a four-fold rotation changes what
an image means (a 6 is not a 9). E-SSL keeps the backbone *sensitive* (equivariant) to them by a
second, supervised-by-construction task: a small view of each image is shown in all four
rotations, and a head g on its backbone features must tell which rotation it sees. With the base
loss of the run (and EquiMod when ``cfg.equimod``):

    L = L_base + w * 1/(4N) * sum_{i, k} CE( g(f(rot_k(s_i))), k ),      k = 0, 1, 2, 3 quarter turns
    s_i = view 1 of image i averaged down to S x S pixels (S = ``cfg.essl_size``)

w = ``cfg.essl_weight`` (0.4, the paper's for SimCLR on CIFAR-10); f is the same backbone as the
base loss's (its BatchNorm sees the 4N small views in a call of their own, as the official code);
g (``ESSLHead``): Linear-LayerNorm-ReLU, Linear-LayerNorm-ReLU, Linear to 4 logits.
Shapes: x_1 ``(N, 3, H, W)`` -> small views ``(4N, 3, S, S)`` and labels ``(4N,) int64`` ->
h ``(4N, D)`` -> logits ``(4N, 4)``.

Deviations from the official code, said:
- the small view is view 1 (already a random resized crop with flip, colour jitter and grayscale)
  averaged down to S x S (``F.interpolate``, mode "area": 2 x 2 blocks at 32 -> 16), not a fresh
  ``RandomResizedCrop(16, scale=(0.2, 1))`` with its own flip and jitter. It has the same
  distribution (the synthetic and CIFAR presets draw their crops from scale (0.2, 1) too) but is
  the same crop as view 1, not an independent one. Why: it draws nothing, so every random stream of
  the run (data order, the views' parameters) stays the one SimCLR sees for the same seed (E-SSL
  against SimCLR is then a controlled comparison), and the batch needs no third view from the engine.
- the head's width ``cfg.essl_hidden`` is 512, not 2048: the official 2048 is 4x its ResNet-18's
  512 features; our ConvNet has 256 features and ``cpu-live`` narrows the projector to 512 too.
- the same lr as the base (the official E-SimCLR run doubles SimCLR's, 0.06 against 0.03): a
  controlled comparison changes one thing.
Cost: the backbone also runs on 4N images of (S/H)^2 the pixels (at 16 of 32: the work of N
full-size images, half again a SimCLR step's two views) plus the head; measured at ``cpu-live``
(batch 64, one thread, batch making included) about 1.6x SimCLR's step time (1.56 to 1.74 over four
alternating measurements on a shared 2-core machine; with the official 2048-wide head 2.15x).

    cfg = TrainConfig.preset("cpu-live", objective="essl", equimod=False)   # SimCLR + E-SSL
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import AugmentationConfig
from .config import TrainConfig
from .functional import four_rotations
from .models import EquiModModel, ModelOutput
from .objectives import Batch, SelfSupervised

__all__ = ["ESSL", "ESSLHead", "rotated_small_views"]


def rotated_small_views(x_1: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """E-SSL's inputs: view 1 averaged down to ``size`` pixels, in its four rotations.

    ``x_1 (N, 3, H, W)`` normalised (averaging commutes with the per-channel normalisation) ->
    ``((4N, 3, size, size), (4N,) int64)``: functional.four_rotations of the small views (block k
    turned k quarter turns, label k). ``size`` = H leaves the pixels as they are.
    """
    small = F.interpolate(x_1, size=(size, size), mode="area")
    return four_rotations(small)


class ESSLHead(nn.Module):
    """The rotation classifier g: ``(M, D)`` features -> ``(M, 4)`` logits, one per quarter turn.

    Three layers as the official SimCLR head: Linear-LayerNorm-ReLU twice (``hidden`` wide), Linear.
    """

    def __init__(self, feature_dim: int, hidden: int = 512):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(feature_dim, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, 4))

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)


class ESSL(SelfSupervised):
    """The run's base (SimCLR or BYOL, with EquiMod when ``cfg.equimod``) plus E-SSL's rotation task.

    ``head``: ESSLHead on the small views' backbone features, trained and checkpointed with the model
    (the checkpoint's "heads"). Losses: the base's, "rot" (the cross-entropy of the module docstring,
    checked finite), "rot_acc" (top-1 over the 4N small views, a diagnostic; chance 0.25) and
    "loss" = the base's loss + ``cfg.essl_weight`` * rot.
    """

    checked = (*SelfSupervised.checked, "rot")

    def __init__(self, cfg: TrainConfig, model: EquiModModel, aug: Optional[AugmentationConfig] = None,
                 n_classes: Optional[int] = None):
        super().__init__(cfg, model, aug, n_classes)
        device = next(model.parameters()).device
        self.head = ESSLHead(model.feature_dim, cfg.essl_hidden).to(device)

    @property
    def label(self) -> str:
        return f"{super().label}+essl"

    def forward(self, model: nn.Module, batch: Batch) -> tuple[ModelOutput, Tensor, Tensor]:
        """The base's ModelOutput, ``(4N, 4)`` rotation logits and their ``(4N,)`` labels."""
        out = super().forward(model, batch)
        turned, labels = rotated_small_views(batch.x_1, self.cfg.essl_size)
        return out, self.head(model.features(turned)), labels

    def losses(self, out, batch: Batch) -> dict[str, Tensor]:
        out, logits, labels = out
        losses = super().losses(out, batch)
        losses["rot"] = F.cross_entropy(logits.float(), labels)
        with torch.no_grad():
            losses["rot_acc"] = (logits.argmax(1) == labels).float().mean()
        losses["loss"] = losses["loss"] + self.cfg.essl_weight * losses["rot"]
        return losses
