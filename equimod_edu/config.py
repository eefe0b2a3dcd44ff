"""The configuration of a training run: one dataclass, its presets, its validation.

    cfg = TrainConfig.preset("cpu-live", epochs=2)     # a named setup with overrides
    cfg.validate()                                     # every mistake found before any work
    cfg.augmentation(), cfg.model_config()             # the objects it describes

Defaults are the paper's CIFAR-10 SimCLR+EquiMod recipe (docs/design.md); presets are small named
overrides of this one config (nanoGPT's config/*.py). The fields a ModelConfig also has (backbone,
z_dim, ...) are passed to it by name, so each model option is set in one place.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from .augment import AugmentationConfig
from .models import ModelConfig

__all__ = ["AUGSELF_GROUPS", "TrainConfig", "check_fields"]

#: The groups of relative parameters the AugSelf objective may regress (augself.AUGSELF_COLUMNS).
AUGSELF_GROUPS = ("crop", "colour")


def check_fields(cls, values: dict) -> None:
    """One ValueError naming the keys of ``values`` that are not fields of the dataclass ``cls``.

    ``values`` is a checkpoint's or config.json's dict; for a file from before BYOL's ``byol_z_dim``
    became ``z_dim``, the message says how to convert it.
    """
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if "byol_z_dim" in unknown:
        raise ValueError(f"{cls.__name__} field byol_z_dim is now z_dim: in the file's dict, for a BYOL run set "
                         f"z_dim to the byol_z_dim value, then delete byol_z_dim (a SimCLR run: just delete it)")
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}")


@dataclass
class TrainConfig:
    """Every setting of a run. Defaults: the paper's CIFAR-10 SimCLR+EquiMod recipe (docs/design.md)."""

    # data and augmentation
    dataset: str = "cifar10"              # "synthetic" | "cifar10" | "folder:PATH"
    data_root: Optional[str] = None       # where the dataset lives (default: the repo's data/)
    train_subset: Optional[int] = None    # use only the first N training images (quick runs)
    augment: str = "cifar10"              # an AugmentationConfig preset
    augment_overrides: dict = field(default_factory=dict)  # e.g. {"hue": 0.5, "gray_p": 0.0}
    hue_encoding: str = "raw"             # "raw" (paper) | "cyclic" (cos, sin)
    # model (see ModelConfig)
    base: str = "simclr"                  # "simclr" | "byol"
    equimod: bool = True                  # False: the plain SimCLR / BYOL baseline
    backbone: str = "resnet18"
    z_dim: int = 128                      # the invariance projection: SimCLR's z, BYOL's projection
    proj_hidden: int = 2048
    y_dim: int = 128
    param_embed_dim: int = 128
    equi_projector: bool = True
    param_encoder: bool = True
    predictor_depth: int = 0              # 0: the paper's single Linear
    predictor_hidden: int = 512
    param_groups: Optional[tuple] = None  # parameter groups the predictor sees (None: all)
    byol_hidden: int = 4096
    ema_base: float = 0.996
    # loss
    objective: str = "self-supervised"    # train.OBJECTIVES: base + EquiMod | "augself" (+ AugSelf) | "supervised"
    lam: float = 1.0                      # weight of the equivariance loss
    temperature_inv: float = 0.5          # NT-Xent (SimCLR)
    temperature_equi: float = 0.2         # equivariance InfoNCE
    # AugSelf (objective "augself" only; augself.py): a head regressing the views' relative parameters
    augself_weight: float = 1.0           # weight of its MSE beside the base loss
    augself_groups: tuple = AUGSELF_GROUPS  # which relative parameters: "crop", "colour"
    augself_hidden: int = 512             # width of its 3-layer MLP
    # optimisation
    epochs: int = 800
    batch_size: int = 512                 # global, over all processes
    optimizer: str = "lars"               # "lars" | "sgd" | "adamw"
    lr: float = 4.0                       # not scaled by batch size (as the official code)
    weight_decay: float = 1e-6
    momentum: float = 0.9
    trust_coefficient: float = 1e-3
    warmup_epochs: float = 10
    max_steps: Optional[int] = None       # stop after this many steps (schedule still spans epochs)
    # machinery
    device: str = "auto"                  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    precision: str = "auto"               # "auto" (bf16 on CUDA) | "bf16" | "fp32"
    channels_last: bool = True            # NHWC memory layout (faster convolutions on GPU and CPU)
    compile: bool = False                 # torch.compile the model
    sync_bn: Optional[bool] = None        # SyncBatchNorm across processes; None: on for several CUDA processes
    stream: Optional[bool] = None         # decode + crop per image in DataLoader workers (None: for folders)
    num_workers: int = 4                  # DataLoader workers when streaming
    # run
    out_dir: str = "runs/default"
    seed: int = 0
    log_every: int = 10                   # steps between metric lines
    checkpoint_every: int = 500           # steps between checkpoints (and one at the end)
    progress: bool = True                 # tqdm progress bar

    def __post_init__(self):
        for name in ("param_groups", "augself_groups"):  # lists (config.json) become tuples
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))

    # ---- presets: small named overrides of this one config (nanoGPT's config/*.py) ---------
    PRESETS = {
        "cifar10-simclr": {},
        "cifar10-byol": dict(base="byol", augment="byol_cifar10", lr=2.0, z_dim=256),
        # ImageNet, as the official runs: NT-Xent temperature 0.2 (CIFAR 0.5); BYOL weight decay 1.5e-6
        "imagenet-simclr": dict(dataset="folder:data/imagenet/train", augment="imagenet", backbone="resnet50",
                                batch_size=4096, lr=2.4, epochs=800, temperature_inv=0.2),
        "imagenet-byol": dict(dataset="folder:data/imagenet/train", augment="byol_imagenet", base="byol",
                              backbone="resnet50", batch_size=4096, lr=4.8, epochs=1000, z_dim=256,
                              weight_decay=1.5e-6),
        # A 2-core CPU: the synthetic set, the small ConvNet, narrower heads, AdamW. Measured reasons
        # (docs/research_log.md): LARS at the paper's lr barely leaves the random init in a few
        # epochs; batch 256 on 8,000 images gives too few steps, batch 64 four times as many;
        # lr 2e-3 beat 1e-3 (SimCLR shape probe 0.694 against 0.556 at 6 epochs).
        # "cpu-live": the main job and the notebooks' runs (about 3-4 minutes a model).
        "cpu-live": dict(dataset="synthetic", augment="synthetic", backbone="convnet", proj_hidden=512,
                         byol_hidden=512, train_subset=8000, batch_size=64, epochs=6, warmup_epochs=1,
                         optimizer="adamw", lr=2e-3, log_every=10, checkpoint_every=200, device="cpu"),
        # "cpu-reference": the shipped checkpoints, twice the live compute: 12 epochs on the same
        # 8,000 images (5-8 minutes a model with two threads). Measured: 6 epochs on all 16,000
        # images gave SimCLR a lower shape probe than the live budget (0.656 against 0.694, seed 0).
        "cpu-reference": dict(dataset="synthetic", augment="synthetic", backbone="convnet", proj_hidden=512,
                              byol_hidden=512, train_subset=8000, batch_size=64, epochs=12, warmup_epochs=1,
                              optimizer="adamw", lr=2e-3, log_every=10, checkpoint_every=200, device="cpu"),
    }

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        if name not in cls.PRESETS:
            renamed = " ('cpu-demo' is now called 'cpu-live')" if name == "cpu-demo" else ""
            raise ValueError(f"unknown preset {name!r}{renamed}; choose one of {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        check_fields(cls, values)
        return cls(**values)

    # ---- validation: every mistake found before any work, with the field named --------------
    def validate(self) -> None:
        def bad(name, why):
            raise ValueError(f"TrainConfig.{name} = {getattr(self, name)!r}: {why}")

        if not (self.dataset in ("synthetic", "cifar10") or self.dataset.startswith("folder:")):
            bad("dataset", "must be 'synthetic', 'cifar10' or 'folder:PATH'")
        if self.dataset.startswith("folder:") and self.dataset[len("folder:"):].strip() in ("", "."):
            bad("dataset", "'folder:' needs a path, e.g. 'folder:data/imagenet'")
        if self.stream and not self.dataset.startswith("folder:"):
            bad("stream", f"streaming decodes image files; {self.dataset!r} lives in memory (use a 'folder:PATH' "
                          f"dataset, or leave stream unset)")
        for name in ("epochs", "batch_size", "log_every", "checkpoint_every", "num_workers", "seed", "augself_hidden"):
            value = getattr(self, name)
            may_be_zero = name in ("num_workers", "seed")
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if may_be_zero else 1):
                bad(name, "must be a non-negative int" if may_be_zero else "must be a positive int")
        if self.seed >= 2**63:
            bad("seed", "must be below 2^63 (torch's seed range)")
        if self.batch_size < 2:
            bad("batch_size", "must be >= 2: the contrastive losses need other images of the batch as negatives")
        numbers = ("lr", "weight_decay", "momentum", "trust_coefficient", "warmup_epochs", "lam", "temperature_inv",
                   "temperature_equi", "ema_base", "augself_weight")
        for name in numbers:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                bad(name, "must be a finite number")
        if self.train_subset is not None and not (isinstance(self.train_subset, int) and self.train_subset > 0):
            bad("train_subset", "must be a positive int or None")
        if self.max_steps is not None and not (isinstance(self.max_steps, int) and self.max_steps > 0):
            bad("max_steps", "must be a positive int or None")
        for name in ("lr", "temperature_inv", "temperature_equi"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        for name in ("weight_decay", "momentum", "lam", "augself_weight"):
            if not getattr(self, name) >= 0:
                bad(name, "must be >= 0")
        groups = self.augself_groups
        if not (isinstance(groups, tuple) and groups and set(groups) <= set(AUGSELF_GROUPS)
                and len(set(groups)) == len(groups)):
            bad("augself_groups", f"must be one or more of {AUGSELF_GROUPS}, each once")
        if not self.trust_coefficient > 0:
            bad("trust_coefficient", "must be > 0")
        if not 0 <= self.warmup_epochs <= self.epochs:
            bad("warmup_epochs", f"must lie in [0, epochs={self.epochs}]")
        if self.optimizer not in ("lars", "sgd", "adamw"):
            bad("optimizer", "must be 'lars', 'sgd' or 'adamw'")
        if self.precision not in ("auto", "bf16", "fp32"):
            bad("precision", "must be 'auto', 'bf16' or 'fp32'")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            bad("device", "must be 'auto', 'cpu' or 'cuda[:i]'")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            bad("device", "CUDA was asked for but torch.cuda.is_available() is False")
        if self.sync_bn and (self.device == "cpu" or not torch.cuda.is_available()):
            bad("sync_bn", "SyncBatchNorm needs CUDA processes (NCCL); on the CPU leave it unset")
        try:
            aug = self.augmentation()
        except (ValueError, TypeError) as error:
            raise ValueError(f"TrainConfig.augment / augment_overrides: {error}") from None
        if self.param_groups is not None:
            unknown = set(self.param_groups) - set(aug.encoded_groups())
            if unknown:
                bad("param_groups", f"unknown groups {sorted(unknown)}; known: {list(aug.encoded_groups())}")
        try:
            self.model_config(aug)
        except ValueError as error:
            raise ValueError(f"TrainConfig (model fields): {error}") from None

    # ---- the objects this config describes -------------------------------------------------------
    def augmentation(self) -> AugmentationConfig:
        return AugmentationConfig.preset(self.augment, **{"hue_encoding": self.hue_encoding,
                                                          **self.augment_overrides})

    def model_config(self, aug: Optional[AugmentationConfig] = None) -> ModelConfig:
        """The ModelConfig of this run: every ModelConfig field of the same name, P and the mask from `aug`."""
        aug = aug or self.augmentation()
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig) if hasattr(self, f.name)}
        mask = aug.param_mask(self.param_groups) if self.param_groups is not None else None
        return ModelConfig(**shared, param_dim=aug.encoded_dim, param_mask=mask)
