"""CASSLE: a projector told how each view was augmented (an augmentation-aware peer of EquiMod).

Przewiezlikowski et al., "Augmentation-aware Self-supervised Learning with Conditioned Projector"
(Knowledge-Based Systems 2024; code gmum/CASSLE). The idea in our words: an invariance loss
(SimCLR, BYOL) makes the two views' projections agree, so the network must throw away whatever the
augmentations change (the crop's place, the colour shift). CASSLE gives the projector the view's
augmentation parameters t as a second input. Its features can then say "this view was shifted
towards red", the projector can undo that with t, and nothing forces the backbone to forget the
colour: the backbone is rewarded for keeping what the projector can explain with t. The base loss
is unchanged; only the projector's input is:

    h_k = f(x_k)                   (N, D)  backbone features of view k (D = model.feature_dim)
    e_k = e(t_k)                   (N, E)  an MLP of the view's standardised parameters t_k (N, P)
    z_k = g([h_k; e_k])            (N, Z)  the conditioned projector, input D + E
    L   = NT-Xent(z_1, z_2)  (SimCLR)  or  BYOL's loss of q(z_k) against the target's z (BYOL)

e: ``cassle_depth`` Linear layers, each (Linear-BN-ReLU) ``cassle_hidden`` wide, the last Linear-BN
to ``cassle_embed`` (the original's ``load_mlp``; its README's recipe: 6 layers, 64 wide, 64 out,
our defaults). g: the course's SimCLR projector (BYOL: its projector) with D + E inputs, the widths
of the model's (``proj_hidden``/``byol_hidden``, ``z_dim``). The model's own projector is unused
and frozen; BYOL's target is an EMA of the backbone (the model's), of e and of g (here).

Deviations from the original, said: t is the engine's encoded vector ``encode(params)`` (crop box,
flip, jitter flag and order, the four factors, grayscale, blur/solarize where drawn; each column
standardised), the same t EquiMod reads, where the original feeds crop centre and size (x mirrored
when flipped), the four jitter factors (0 when not jittered), the mean colour shift, the blur sigma
and the grayscale flag; ``cfg.param_groups`` may restrict t to some groups, as the original's
``--aug-cond``. The projector is the course's (3 layers, BN on the output, as the SimCLR baseline)
where the original's SimCLR projector has 2, and the NT-Xent temperature is the run's
(``temperature_inv``, 0.5) where the original uses 0.2: CASSLE differs from our SimCLR only by the
conditioning. No EquiMod on top (``cfg.equimod`` must be False).

What it does here (docs/research_log.md, section 9): on the synthetic set CASSLE probes *below*
SimCLR. Small controlled runs (seed 0, 4,096 images x 4 epochs) found no wiring fault (with t set to
0 and g started from the model's projector it is SimCLR: a test checks it) and no recipe cause (a
depth-2 e(t) is no better): conditioning on the colour-jitter factors lowers the NT-Xent while every
probe falls (shape 0.382 with colour-only conditioning, 0.438 with crop and flip only, SimCLR 0.478).
One reading: knowing the jitter, the projector can undo it on global colour statistics, which then
tell images apart cheaply, so the backbone learns less shape.

    cfg = TrainConfig.preset("cpu-live", objective="cassle", equimod=False)   # SimCLR + CASSLE
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import Tensor, nn

from .augment import AugmentationConfig
from .config import TrainConfig
from .models import BYOLProjectionHead, EquiModModel, ModelOutput, ProjectionHead, SimCLRProjectionHead, byol_momentum
from .objectives import Batch, SelfSupervised

__all__ = ["CASSLE", "AugmentationEncoder", "ConditionedProjector"]


class AugmentationEncoder(ProjectionHead):
    """CASSLE's e: ``(N, P)`` standardised parameters t -> ``(N, embed)`` their embedding e(t).

    ``depth`` Linear layers: depth - 1 blocks Linear-BN-ReLU ``hidden`` wide, then Linear-BN (affine)
    to ``embed`` (depth 1: Linear-BN, like EquiMod's ParameterEncoder).
    """

    def __init__(self, param_dim: int, embed: int = 64, hidden: int = 64, depth: int = 6):
        blocks, last = [], param_dim
        for _ in range(depth - 1):
            blocks.append((last, hidden, nn.BatchNorm1d(hidden), nn.ReLU()))
            last = hidden
        blocks.append((last, embed, nn.BatchNorm1d(embed), None))
        super().__init__(blocks)


class ConditionedProjector(nn.Module):
    """z = g([h; e(t * mask)]): ``h (N, D)``, ``t (N, P)`` -> ``(N, Z)``.

    ``encoder`` e (AugmentationEncoder), ``projector`` g (a head with D + embed inputs); ``mask``
    ``(P,)`` 0/1 zeroes the columns of t the projector must not see (None: all seen).
    """

    def __init__(self, encoder: AugmentationEncoder, projector: ProjectionHead, mask: Optional[Tensor] = None):
        super().__init__()
        self.encoder, self.projector = encoder, projector
        self.register_buffer("mask", mask)

    def forward(self, h: Tensor, t: Tensor) -> Tensor:
        if self.mask is not None:
            t = t * self.mask.to(t.dtype)
        return self.projector(torch.cat([h, self.encoder(t).to(h.dtype)], dim=1))


class CASSLE(SelfSupervised):
    """SimCLR or BYOL (``cfg.base``) with CASSLE's conditioned projector in place of the model's.

    ``conditioned``: the ConditionedProjector, trained and checkpointed with the model (the
    checkpoint's "heads"); BYOL adds ``target``, its EMA copy (no gradient), and keeps training the
    model's predictor q. ``forward`` returns a ModelOutput (h = [h_1; h_2], z from the conditioned
    projector), so the losses are SelfSupervised's: "loss" = "inv" (NT-Xent or BYOL's), "equi" 0,
    and SimCLR's "inv_top1" / "inv_chance" diagnostics.
    """

    def __init__(self, cfg: TrainConfig, model: EquiModModel, aug: Optional[AugmentationConfig] = None,
                 n_classes: Optional[int] = None):
        if cfg.equimod:
            raise ValueError("TrainConfig.equimod = True: the CASSLE objective replaces the projector and has "
                             "no EquiMod module; set equimod=False (--no-equimod)")
        super().__init__(cfg, model, aug, n_classes)
        aug = aug if aug is not None else cfg.augmentation()
        mask = torch.tensor(aug.param_mask(cfg.param_groups), dtype=torch.float32) if cfg.param_groups else None
        encoder = AugmentationEncoder(aug.encoded_dim, cfg.cassle_embed, cfg.cassle_hidden, cfg.cassle_depth)
        width = model.feature_dim + cfg.cassle_embed
        projector = (SimCLRProjectionHead(width, cfg.proj_hidden, cfg.z_dim) if cfg.base == "simclr"
                     else BYOLProjectionHead(width, cfg.byol_hidden, cfg.z_dim))
        self.conditioned = ConditionedProjector(encoder, projector, mask).to(next(model.parameters()).device)
        self.target = copy.deepcopy(self.conditioned).requires_grad_(False) if cfg.base == "byol" else None
        model.projector.requires_grad_(False)  # unused: DDP must not wait for its gradients

    @property
    def label(self) -> str:
        return f"{self.cfg.base}+cassle"

    def forward(self, model: nn.Module, batch: Batch) -> ModelOutput:
        n = batch.x_1.shape[0]
        x, t = torch.cat([batch.x_1, batch.x_2]), torch.cat([batch.t_1, batch.t_2])
        h = model.features(x)
        z = self.conditioned(h, t)
        out = ModelOutput(h, *z.split(n))
        if self.cfg.base == "byol":
            out.p_1, out.p_2 = model.byol_predictor(z).split(n)
            with torch.no_grad():
                out.target_z_1, out.target_z_2 = self.target(model.target_backbone(x), t).detach().split(n)
        return out

    def after_step(self, model: EquiModModel, step: int, total_steps: int) -> None:
        super().after_step(model, step, total_steps)  # BYOL: the model's target backbone
        if self.target is not None:
            momentum = byol_momentum(step, total_steps, self.cfg.ema_base)
            with torch.no_grad():
                for online, target in zip(self.conditioned.parameters(), self.target.parameters()):
                    target.lerp_(online.detach(), 1.0 - momentum)
