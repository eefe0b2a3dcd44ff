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

__all__ = ["AUGSELF_GROUPS", "CARE_PAIRS", "TrainConfig", "check_fields"]

#: The groups of relative parameters the AugSelf objective may regress (augself.AUGSELF_COLUMNS).
AUGSELF_GROUPS = ("crop", "colour")
#: Where CARE's group-shared views come from (TrainConfig.care_pair, care.py).
CARE_PAIRS = ("separate", "shared")


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
    # what is optimised, train.OBJECTIVES: "self-supervised" (the base + EquiMod), the base + a peer
    # ("augself", "cassle", "essl", "care", "split"; each its module and block below) or "supervised"
    objective: str = "self-supervised"
    lam: float = 1.0                      # weight of the equivariance loss
    temperature_inv: float = 0.5          # NT-Xent (SimCLR)
    temperature_equi: float = 0.2         # equivariance InfoNCE
    # AugSelf (objective "augself" only; augself.py): a head regressing the views' relative parameters
    augself_weight: float = 1.0           # weight of its MSE beside the base loss
    augself_groups: tuple = AUGSELF_GROUPS  # which relative parameters: "crop", "colour"
    augself_hidden: int = 512             # width of its 3-layer MLP
    # CARE (objective "care" only; care.py): groups sharing one augmentation per view, Gram matrices matched.
    # The paper's CIFAR-10 recipe: weight 0.03, 16 splits of a batch of 256, i.e. groups of 16 images;
    # groups of 16 keep its loss scale (which grows with the group) at our batch of 64 (4 groups).
    care_weight: float = 0.03             # weight of the Gram-matching loss beside the base loss
    care_group_size: int = 16             # images per group (batch_size must be a multiple of it)
    care_pair: str = "separate"           # "separate": the paper's extra group-shared pair for the CARE loss,
    #                                       independent views for NT-Xent (2x a SimCLR step); "shared": one
    #                                       group-shared pair feeds both losses (about a SimCLR step)
    # CASSLE (objective "cassle" only, equimod False; cassle.py): the projector conditioned on t
    cassle_embed: int = 64                # width of e(t), joined to h: the projector reads D + cassle_embed
    cassle_hidden: int = 64               # width of the hidden layers of e
    cassle_depth: int = 6                 # Linear layers of e (the original's recipe: 6)
    # E-SSL (objective "essl" only; essl.py): a head telling which of 4 rotations a small view shows
    essl_weight: float = 0.4              # weight of its cross-entropy beside the base loss (paper, SimCLR CIFAR)
    essl_hidden: int = 512                # width of its 3-layer MLP (paper: 2048 on ResNet-18's 512 features)
    essl_size: int = 16                   # side of the small view in pixels: view 1 averaged down to it
    # split space (objective "split" only, equimod False; split.py, after SIE): z = [z_inv; z_eq], z_inv
    # invariant (NT-Xent), z_eq of view 2 predicted as W(d_12) z_eq_1 by a hypernetwork of the relative parameters
    split_weight: float = 1.0             # weight of its InfoNCE beside the NT-Xent on z_inv
    split_dim: int = 64                   # k, the columns of z_eq (the last k of z; must be < z_dim)
    split_hidden: int = 64                # width of the hypernetwork's 3-layer MLP (k^2 outputs)
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
    precision: str = "auto"               # "auto" (bf16 on CUDA and CPUs with bf16 instructions) | "bf16" | "fp32"
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
        for name in ("epochs", "batch_size", "log_every", "checkpoint_every", "num_workers", "seed", "augself_hidden",
                     "cassle_embed", "cassle_hidden", "cassle_depth"):
            value = getattr(self, name)
            may_be_zero = name in ("num_workers", "seed")
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if may_be_zero else 1):
                bad(name, "must be a non-negative int" if may_be_zero else "must be a positive int")
        if self.seed >= 2**63:
            bad("seed", "must be below 2^63 (torch's seed range)")
        if self.batch_size < 2:
            bad("batch_size", "must be >= 2: the contrastive losses need other images of the batch as negatives")
        numbers = ("lr", "weight_decay", "momentum", "trust_coefficient", "warmup_epochs", "lam", "temperature_inv",
                   "temperature_equi", "ema_base", "augself_weight", "care_weight")
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
        for name in ("weight_decay", "momentum", "lam", "augself_weight", "care_weight"):
            if not getattr(self, name) >= 0:
                bad(name, "must be >= 0")
        groups = self.augself_groups
        if not (isinstance(groups, tuple) and groups and set(groups) <= set(AUGSELF_GROUPS)
                and len(set(groups)) == len(groups)):
            bad("augself_groups", f"must be one or more of {AUGSELF_GROUPS}, each once")
        group = self.care_group_size
        if isinstance(group, bool) or not isinstance(group, int) or group < 2:
            bad("care_group_size", "must be an int >= 2 (a group of one image has no pairs to compare)")
        if self.care_pair not in CARE_PAIRS:
            bad("care_pair", f"must be one of {CARE_PAIRS}: 'separate' (the paper: an extra group-shared pair for "
                             f"the CARE loss) or 'shared' (one group-shared pair for both losses), got "
                             f"{self.care_pair!r}")
        if self.objective == "care" and self.batch_size % group:
            bad("batch_size", f"must be a multiple of care_group_size = {group} (objective 'care' cuts the "
                              f"batch into groups sharing one augmentation)")
        for name, least in (("essl_hidden", 1), ("essl_size", 2)):  # a quarter turn of one pixel shows nothing
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                bad(name, f"must be an int >= {least}")
        weight = self.essl_weight
        finite = not isinstance(weight, bool) and isinstance(weight, (int, float)) and math.isfinite(weight)
        if not (finite and weight >= 0):
            bad("essl_weight", "must be a finite number >= 0")
        for name in ("split_dim", "split_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(name, "must be a positive int")
        weight = self.split_weight
        finite = not isinstance(weight, bool) and isinstance(weight, (int, float)) and math.isfinite(weight)
        if not (finite and weight >= 0):
            bad("split_weight", "must be a finite number >= 0")
        if self.objective == "split" and self.split_dim >= self.z_dim:
            bad("split_dim", f"must be < z_dim = {self.z_dim} (objective 'split' keeps the first z_dim - split_dim "
                             f"columns of z invariant)")
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
        if self.objective == "essl" and self.essl_size > aug.size:
            bad("essl_size", f"must be at most the views' size {aug.size} (the small view is view 1 made smaller)")
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
