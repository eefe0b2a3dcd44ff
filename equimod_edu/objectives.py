"""What the training loop optimises: an objective turns one batch into losses.

    objective = SelfSupervised(cfg, model)     # train.OBJECTIVES[cfg.objective] names the class
    out = objective(model, batch)              # every network of the step (inside DDP / torch.compile)
    losses = objective.losses(out, batch)      # {"loss": what is minimised, its terms, diagnostics}

The Trainer (train.py) runs one loop for every objective: it makes the batch the objective asks
for (``needs``: one or two augmented views, the original x_o, the labels, views shared within
groups), calls the objective through the (distributed, compiled) network, backpropagates
``losses["loss"]``, steps the optimiser over ``param_groups`` and calls ``after_step``; it logs
every entry of ``losses`` (``() float`` tensors), and a non-finite entry named in ``checked``
stops the run.

- ``SelfSupervised``: SimCLR or BYOL (``cfg.base``), with the EquiMod module when
  ``cfg.equimod``: L = L_inv + lam * L_equi (losses.equimod_loss), and the gain as diagnostic.
- ``Supervised``: cross-entropy of a linear classifier on h = f(x), one crop + flip view.

A new objective (e.g. an augmentation-aware head: an MLP on [h_1; h_2] regressing the difference
of the two views' parameters) is a subclass of one of these in its own module: its trainable
modules are attributes set in ``__init__`` (trained, distributed and checkpointed with the
model: the checkpoint's "heads"), ``forward`` runs them, ``losses`` adds its term; then one line
in ``train.OBJECTIVES`` makes ``TrainConfig.objective`` (and ``--objective``) select it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import AugmentationConfig, AugmentationParams
from .config import TrainConfig
from .losses import equimod_loss, equivariance_gain
from .models import EquiModModel, ModelOutput, byol_momentum
from .optim import lars_param_groups

__all__ = ["Batch", "Needs", "Objective", "SelfSupervised", "Supervised", "supervised_augmentation"]


class Batch(NamedTuple):
    """One step's inputs on this process; what the objective does not need is None.

    x_o, x_1, x_2: ``(N, 3, S, S) float`` normalised images (the original and the two views);
    params_k: the views' AugmentationParams (N rows); t_k: ``(N, P) float`` encode(params_k);
    labels: ``(N,) int64`` the dataset's target. x_3, x_4, params_3, params_4, t_3, t_4: a second
    pair of views of the same images, each shared within groups (``Needs.grouped_pair``: CARE's).
    """

    x_o: Optional[Tensor] = None
    x_1: Optional[Tensor] = None
    x_2: Optional[Tensor] = None
    params_1: Optional[AugmentationParams] = None
    params_2: Optional[AugmentationParams] = None
    t_1: Optional[Tensor] = None
    t_2: Optional[Tensor] = None
    labels: Optional[Tensor] = None
    x_3: Optional[Tensor] = None
    x_4: Optional[Tensor] = None
    params_3: Optional[AugmentationParams] = None
    params_4: Optional[AugmentationParams] = None
    t_3: Optional[Tensor] = None
    t_4: Optional[Tensor] = None


@dataclasses.dataclass(frozen=True)
class Needs:
    """What an objective reads from a batch: the Trainer makes only that."""

    views: int = 2        # augmented views per image: 2 (the self-supervised pair) or 1
    x_o: bool = False     # the un-augmented original (EquiMod's anchor)
    labels: bool = False  # the dataset's target labels
    group_size: int = 0   # images per contiguous group sharing one draw per view (CARE); 0: one draw per image
    grouped_pair: bool = False  # group_size shares the draws of an extra pair x_3, x_4 (x_1, x_2 stay per image)


class Objective(nn.Module):
    """The interface of what the loop optimises (subclass it; see the module docstring).

    cfg: the run's TrainConfig; model: the EquiModModel the loop trains; aug: the augmentation
    of the run; n_classes: the number of target classes (when ``needs.labels``, else None).
    The modules an objective sets as attributes are its own trainable heads.
    """

    needs = Needs()
    #: the losses checked finite at every log line (a non-finite one stops the run)
    checked: tuple[str, ...] = ("loss",)

    def __init__(self, cfg: TrainConfig, model: EquiModModel, aug: Optional[AugmentationConfig] = None,
                 n_classes: Optional[int] = None):
        super().__init__()
        self.cfg = cfg

    @classmethod
    def augmentation(cls, aug: AugmentationConfig) -> AugmentationConfig:
        """The augmentation this objective's views are drawn from (default: the run's)."""
        return aug

    @property
    def label(self) -> str:
        """A short name for the progress bar."""
        return type(self).__name__.lower()

    def forward(self, model: nn.Module, batch: Batch) -> Any:
        """Run every network of the step (the model and this objective's heads) on the batch."""
        raise NotImplementedError

    def losses(self, out: Any, batch: Batch) -> dict[str, Tensor]:
        """``{"loss": the () tensor minimised, ...}``: its terms and diagnostics, () tensors."""
        raise NotImplementedError

    def param_groups(self, model: EquiModModel) -> list[dict]:
        """The optimiser's parameter groups: LARS's split of the model's and the heads' parameters."""
        return lars_param_groups(nn.ModuleList([model, *self.children()]), self.cfg.weight_decay)

    def after_step(self, model: EquiModModel, step: int, total_steps: int) -> None:
        """Called after each optimiser step (BYOL moves its target here)."""

    def features(self, out: Any) -> Optional[Tensor]:
        """``(N, D)`` backbone features h of the originals x_o in ``forward``'s output (for monitor.py).

        None where the output does not hold them (monitor.py then forwards x_o itself). The monitor reads
        only objectives that override this (the self-supervised ones: labels never reach their loss).
        """
        return None


class SelfSupervised(Objective):
    """SimCLR or BYOL, plus EquiMod when ``cfg.equimod``: L = L_inv + lam * L_equi.

    Two views (and x_o with EquiMod) through the model in one forward; the losses of
    ``losses.equimod_loss`` ("loss", "inv", "equi" and their chance lines / top-1), and with
    EquiMod the "gain" cos(y, y_hat) - cos(y, y_o) averaged over both views (no gradient).
    """

    checked = ("loss", "inv", "equi")

    def __init__(self, cfg: TrainConfig, model: EquiModModel, aug: Optional[AugmentationConfig] = None,
                 n_classes: Optional[int] = None):
        super().__init__(cfg, model, aug, n_classes)
        self.needs = Needs(views=2, x_o=cfg.equimod)

    @property
    def label(self) -> str:
        return f"{self.cfg.base}{'+equimod' if self.cfg.equimod else ''}"

    def forward(self, model: nn.Module, batch: Batch):
        return model(batch.x_o, batch.x_1, batch.x_2, batch.t_1, batch.t_2)

    def losses(self, out, batch: Batch) -> dict[str, Tensor]:
        cfg = self.cfg
        losses = equimod_loss(out, cfg.base, cfg.lam, cfg.temperature_inv, cfg.temperature_equi)
        if cfg.equimod:
            with torch.no_grad():
                gain = torch.cat([equivariance_gain(out.y_1, out.y_hat_1, out.y_o),
                                  equivariance_gain(out.y_2, out.y_hat_2, out.y_o)])
            losses["gain"] = gain.mean()
        return losses

    def features(self, out) -> Optional[Tensor]:
        """The features h of x_o, ``(N, D)``, where out.h is [x_o; x_1; x_2] (EquiMod); None where it is [x_1; x_2].

        A tuple from a subclass's forward (AugSelf, E-SSL, CARE, split): its first item is the ModelOutput.
        """
        out = out if isinstance(out, ModelOutput) else out[0]
        n = out.z_1.shape[0]
        return out.h[:n] if out.h.shape[0] == 3 * n else None

    def after_step(self, model: EquiModModel, step: int, total_steps: int) -> None:
        if self.cfg.base == "byol":
            model.update_target(byol_momentum(step, total_steps, self.cfg.ema_base))


def supervised_augmentation(aug: AugmentationConfig) -> AugmentationConfig:
    """The views of supervised training: the run's crop and flip, no colour jitter, no grayscale."""
    return aug.replace(jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0)


class Supervised(Objective):
    """Cross-entropy of a linear classifier on h = f(x) against the target label, one view per image.

    Trains the backbone and ``classifier`` (``feature_dim -> n_classes``) in one AdamW-style group
    with weight decay on every parameter (the supervised reference of supervised.py); the model's
    other heads are frozen at their initialisation. Logs "loss" and "train_acc" (top-1 on the batch).
    """

    needs = Needs(views=1, labels=True)

    def __init__(self, cfg: TrainConfig, model: EquiModModel, aug: Optional[AugmentationConfig] = None,
                 n_classes: Optional[int] = None):
        super().__init__(cfg, model, aug, n_classes)
        self.classifier = nn.Linear(model.feature_dim, n_classes).to(next(model.parameters()).device)
        for name, module in model.named_children():
            if name != "backbone":
                module.requires_grad_(False)  # nothing trains them: DDP must not wait for their gradients

    @classmethod
    def augmentation(cls, aug: AugmentationConfig) -> AugmentationConfig:
        return supervised_augmentation(aug)

    @property
    def label(self) -> str:
        return "supervised"

    def forward(self, model: nn.Module, batch: Batch) -> Tensor:
        return self.classifier(model.features(batch.x_1))

    def losses(self, logits: Tensor, batch: Batch) -> dict[str, Tensor]:
        with torch.no_grad():
            accuracy = (logits.argmax(1) == batch.labels).float().mean()
        return {"loss": F.cross_entropy(logits, batch.labels), "train_acc": accuracy}

    def param_groups(self, model: EquiModModel) -> list[dict]:
        params = list(model.backbone.parameters()) + list(self.classifier.parameters())
        return [{"params": params, "weight_decay": max(self.cfg.weight_decay, 0.0)}]
