"""Training EquiMod (or plain SimCLR / BYOL) end to end: one config, one loop, callbacks.

Run it from a terminal:

    equimod-edu train --preset cpu-live                        # SimCLR+EquiMod, laptop CPU, minutes
    equimod-edu train --preset cpu-live --no-equimod           # the SimCLR baseline, same budget
    equimod-edu train --preset cifar10-simclr --out runs/c10   # the paper's recipe, one GPU
    torchrun --nproc_per_node=4 -m equimod_edu.cli train --preset cifar10-byol --out runs/byol
    equimod-edu train --out runs/c10 --resume                  # continue exactly where it stopped

or from Python (the notebooks do this):

    cfg = TrainConfig.preset("cpu-live", epochs=2)
    trainer = Trainer(cfg)
    for metrics in trainer.epochs():          # one dict per epoch: losses, gain, lr, images/s
        print(metrics)

One step (docs/design.md section 1): x_o, (x_1, t_1), (x_2, t_2) <- augment(batch);
out = model(x_o, x_1, x_2, t_1, t_2); loss = L_inv + lambda * L_equi; LARS step; BYOL EMA.
Everything random in a step comes from generators seeded by (seed, epoch) for the data order and
(seed, step) for the augmentations, so a resumed run replays the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from . import __version__
from .augment import AugmentationConfig, AugmentationParams, apply
from .data import ImageDataset, load_dataset
from .loader import FolderCrops, views_from_crops
from .losses import equimod_loss, equivariance_gain
from .models import EquiModModel, ModelConfig, byol_momentum, param_mask_from_groups
from .optim import LARS, lars_param_groups, set_lr, warmup_cosine


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
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
    z_dim: int = 128
    proj_hidden: int = 2048
    y_dim: int = 128
    param_embed_dim: int = 128
    equi_projector: bool = True
    param_encoder: bool = True
    predictor_depth: int = 0              # 0: the paper's single Linear
    predictor_hidden: int = 512
    param_groups: Optional[tuple] = None  # parameter groups the predictor sees (None: all)
    byol_hidden: int = 4096
    byol_z_dim: int = 256
    ema_base: float = 0.996
    # loss
    lam: float = 1.0                      # weight of the equivariance loss
    temperature_inv: float = 0.5          # NT-Xent (SimCLR)
    temperature_equi: float = 0.2         # equivariance InfoNCE
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
    sync_bn: bool = False                 # SyncBatchNorm across processes (CUDA only)
    stream: Optional[bool] = None         # decode + crop per image in DataLoader workers (None: for folders)
    num_workers: int = 4                  # DataLoader workers when streaming
    # run
    out_dir: str = "runs/default"
    seed: int = 0
    log_every: int = 10                   # steps between metric lines
    checkpoint_every: int = 500           # steps between checkpoints (and one at the end)
    progress: bool = True                 # tqdm progress bar

    def __post_init__(self):
        if isinstance(self.param_groups, list):
            self.param_groups = tuple(self.param_groups)

    # ---- presets: small named overrides of this one config (nanoGPT's config/*.py) ---------
    PRESETS = {
        "cifar10-simclr": {},
        "cifar10-byol": dict(base="byol", augment="byol_cifar10", lr=2.0, z_dim=256),
        "imagenet-simclr": dict(dataset="folder:data/imagenet/train", augment="imagenet", backbone="resnet50",
                                batch_size=4096, lr=2.4, epochs=800),
        "imagenet-byol": dict(dataset="folder:data/imagenet/train", augment="byol_imagenet", base="byol",
                              backbone="resnet50", batch_size=4096, lr=4.8, epochs=1000, z_dim=256),
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

    #: Earlier names that still work: "cpu-demo" is the live budget.
    PRESET_ALIASES = {"cpu-demo": "cpu-live"}

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        name = cls.PRESET_ALIASES.get(name, name)
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**values)

    # ---- validation: every mistake found before any work, with the field named --------------
    def validate(self) -> None:
        def bad(name, why):
            raise ValueError(f"TrainConfig.{name} = {getattr(self, name)!r}: {why}")

        if not (self.dataset in ("synthetic", "cifar10") or self.dataset.startswith("folder:")):
            bad("dataset", "must be 'synthetic', 'cifar10' or 'folder:PATH'")
        for name in ("epochs", "batch_size", "log_every", "checkpoint_every"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                bad(name, "must be a positive int")
        if self.train_subset is not None and not (isinstance(self.train_subset, int) and self.train_subset > 0):
            bad("train_subset", "must be a positive int or None")
        if self.max_steps is not None and not (isinstance(self.max_steps, int) and self.max_steps > 0):
            bad("max_steps", "must be a positive int or None")
        for name in ("lr", "temperature_inv", "temperature_equi"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        for name in ("weight_decay", "momentum", "lam", "num_workers"):
            if not getattr(self, name) >= 0:
                bad(name, "must be >= 0")
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
        aug = aug or self.augmentation()
        mask = None
        if self.param_groups is not None:
            mask = param_mask_from_groups(aug.encoded_groups(), self.param_groups, aug.encoded_dim)
        return ModelConfig(
            backbone=self.backbone, base=self.base, equimod=self.equimod, param_dim=aug.encoded_dim,
            z_dim=self.z_dim, proj_hidden=self.proj_hidden, y_dim=self.y_dim,
            param_embed_dim=self.param_embed_dim, equi_projector=self.equi_projector,
            param_encoder=self.param_encoder, predictor_depth=self.predictor_depth,
            predictor_hidden=self.predictor_hidden, param_mask=mask, byol_hidden=self.byol_hidden,
            byol_z_dim=self.byol_z_dim, ema_base=self.ema_base)


# --------------------------------------------------------------------------------------------
# Checkpoints: one file, written atomically, loaded with weights_only=True
# --------------------------------------------------------------------------------------------
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the old one.

    A rename is atomic, so a kill at any moment leaves either the old or the new file, whole.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint safely (weights_only=True: tensors and plain Python values only)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_model(path, map_location="cpu") -> tuple[EquiModModel, TrainConfig]:
    """The trained model (eval mode) and its config from a run folder or checkpoint file."""
    state = load_checkpoint(path, map_location)
    cfg = TrainConfig.from_dict(state["config"])
    model = EquiModModel(cfg.model_config())
    model.load_state_dict(state["model"])
    return model.eval(), cfg


def _folder_path(dataset: str) -> Path:
    """'folder:PATH' -> PATH/train if that exists, else PATH (as data.load_dataset)."""
    path = Path(dataset[len("folder:"):])
    return path / "train" if (path / "train").is_dir() else path


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


# --------------------------------------------------------------------------------------------
# Environment: devices, processes, what to record
# --------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def environment() -> dict:
    """What a reader needs to reproduce the run: versions, hardware, command line."""
    info = {"equimod_edu": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda, "argv": sys.argv,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return info


def _init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun (WORLD_SIZE > 1): NCCL on GPU, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------
Callback = Callable[["Trainer", dict], None]
EVENTS = ("on_log", "on_epoch_end", "on_train_end")


class Trainer:
    """Runs one training job (minGPT style: a loop with named callbacks, no framework).

    Callbacks: ``trainer.add_callback("on_log", fn)`` with fn(trainer, metrics) called every
    ``log_every`` steps; "on_epoch_end" once per epoch; "on_train_end" at the end.
    """

    def __init__(self, cfg: TrainConfig, callbacks: Optional[dict[str, list[Callback]]] = None,
                 resume: bool = False, dataset: Optional[ImageDataset] = None):
        cfg.validate()
        self.cfg = cfg
        self.callbacks = {event: list((callbacks or {}).get(event, [])) for event in EVENTS}
        self.rank, self.world, self.device = _init_distributed(resolve_device(cfg.device))
        if cfg.batch_size % self.world:
            raise ValueError(f"TrainConfig.batch_size = {cfg.batch_size}: must divide by the {self.world} processes")
        self.out_dir = Path(cfg.out_dir)
        self.is_main = self.rank == 0
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.channels_last = cfg.channels_last

        self.aug = cfg.augmentation()
        self.streaming = dataset is None and (cfg.stream if cfg.stream is not None else cfg.dataset.startswith("folder:"))
        if self.streaming:  # too large for the device: workers decode and crop (loader.py)
            self.data = FolderCrops(_folder_path(cfg.dataset), self.aug, cfg.seed)
        else:  # small: the whole set as uint8 on the device
            self.data = dataset if dataset is not None else load_dataset(cfg.dataset, "train", cfg.data_root)
            self.data = self.data.to(self.device)
        self.n_images = min(len(self.data), cfg.train_subset or len(self.data))
        if self.n_images < cfg.batch_size:
            raise ValueError(f"TrainConfig.batch_size = {cfg.batch_size}: larger than the dataset ({self.n_images} images)")
        self.steps_per_epoch = self.n_images // cfg.batch_size  # drop the last partial batch
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)

        torch.manual_seed(cfg.seed)
        self.model = EquiModModel(cfg.model_config(self.aug)).to(self.device)
        if cfg.sync_bn and self.world > 1:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = self._make_optimizer()
        self.forward = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.forward = torch.compile(self.forward)

        self.step, self.history, self.stop_reason = 0, [], None
        self.train_seconds = 0.0  # wall time inside the loop, over all resumes (compute-matched comparisons)
        self._epoch_order, self._stream = (-1, None), None
        self._aug_generator = torch.Generator(device=self.device)
        self._signal = None
        if resume:
            self._resume()

    # ---- setup helpers --------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        groups = lars_param_groups(self.model, cfg.weight_decay)
        if cfg.optimizer == "lars":
            return LARS(groups, lr=cfg.lr, momentum=cfg.momentum, trust_coefficient=cfg.trust_coefficient)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
        return torch.optim.AdamW(groups, lr=cfg.lr)

    def add_callback(self, event: str, fn: Callback) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; choose one of {EVENTS}")
        self.callbacks[event].append(fn)

    def _fire(self, event: str, metrics: dict) -> None:
        for fn in self.callbacks[event]:
            fn(self, metrics)

    # ---- one step -------------------------------------------------------------------------------
    def batch_indices(self, epoch: int) -> torch.Tensor:
        """(steps_per_epoch, batch_size) dataset indices of this epoch's global batches (CPU)."""
        if self._epoch_order[0] != epoch:
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n_images, generator=g)[: self.steps_per_epoch * self.cfg.batch_size]
            self._epoch_order = (epoch, order.view(self.steps_per_epoch, self.cfg.batch_size))
        return self._epoch_order[1]

    @property
    def local_rows(self) -> slice:
        """This process's share of a global batch."""
        b = self.cfg.batch_size
        return slice(self.rank * b // self.world, (self.rank + 1) * b // self.world)

    def next_batch(self, step: int):
        """The global batch of `step` as uint8 images on the device, or (streaming) this process's
        share as (images (n, 3, 3, S, S), crops (n, 2, 4)) from the DataLoader workers."""
        epoch, i = divmod(step, self.steps_per_epoch)
        order = self.batch_indices(epoch)
        if not self.streaming:
            return self.data.images[order[i].to(self.device)]
        if self._stream is None or self._stream[0] != epoch:
            from torch.utils.data import DataLoader
            self.data.set_epoch(epoch)
            batches = [order[s, self.local_rows].tolist() for s in range(i, self.steps_per_epoch)]
            loader = DataLoader(self.data, batch_sampler=batches, num_workers=self.cfg.num_workers,
                                pin_memory=self.device.type == "cuda")
            self._stream = (epoch, iter(loader))
        images, crops, _ = next(self._stream[1])
        return images, crops

    def make_views(self, batch, step: int):
        """x_o, x_1, x_2, t_1, t_2 for this process's share of the batch (see next_batch).

        Parameters are drawn for the whole global batch from a generator seeded by (seed, step)
        and sliced, so any number of processes sees the same augmentations as one process would.
        """
        g = self._aug_generator.manual_seed(self.cfg.seed * 1_000_003 + step + 1)
        if self.streaming:
            *x, p_1, p_2 = views_from_crops(*batch, self.aug, g, self.device)
        else:
            images = batch
            n, size = images.shape[0], tuple(images.shape[-2:])
            p_1 = self.aug.sample(n, size, g, self.device, view=0)
            p_2 = self.aug.sample(n, size, g, self.device, view=1)
            images, p_1, p_2 = images[self.local_rows], p_1[self.local_rows], p_2[self.local_rows]
            x = [self.aug.original(images), apply(images, p_1, self.aug), apply(images, p_2, self.aug)]
        if self.channels_last:
            x = [v.contiguous(memory_format=torch.channels_last) for v in x]
        return (*x, self.aug.encode(p_1), self.aug.encode(p_2))

    def training_step(self, step: int, batch) -> dict:
        """Forward, loss, backward, optimiser step (and BYOL EMA). Returns detached metrics."""
        cfg = self.cfg
        lr = warmup_cosine(step, self.total_steps, self.warmup_steps, cfg.lr)
        set_lr(self.optimizer, lr)
        x_o, x_1, x_2, t_1, t_2 = self.make_views(batch, step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.forward(x_o if cfg.equimod else None, x_1, x_2, t_1, t_2)
            losses = equimod_loss(out, cfg.base, cfg.lam, cfg.temperature_inv, cfg.temperature_equi)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        if cfg.base == "byol":
            self.model.update_target(byol_momentum(step, self.total_steps, cfg.ema_base))
        metrics = {k: v.detach() for k, v in losses.items()}
        if cfg.equimod:
            with torch.no_grad():
                gain = torch.cat([equivariance_gain(out.y_1, out.y_hat_1, out.y_o),
                                  equivariance_gain(out.y_2, out.y_hat_2, out.y_o)])
            metrics["gain"] = gain.mean()
        metrics["lr"] = torch.tensor(lr)
        return metrics

    # ---- the loop ---------------------------------------------------------------------------------
    def epochs(self) -> Iterator[dict]:
        """Train, yielding one metrics dict per finished epoch. Ctrl-C / SIGTERM: save and stop."""
        cfg = self.cfg
        last_step = min(self.total_steps, cfg.max_steps or self.total_steps)
        if self.is_main:
            self._write_run_files()
        previous = self._install_signal_handlers()
        bar = tqdm(total=last_step, initial=self.step, desc=f"{cfg.base}{'+equimod' if cfg.equimod else ''}",
                   disable=not (cfg.progress and self.is_main), dynamic_ncols=True)
        try:
            self.model.train()
            sums, count, tic, tic_step = {}, 0, time.perf_counter(), self.step
            while self.step < last_step and self._signal is None:
                metrics = self.training_step(self.step, self.next_batch(self.step))
                self.step += 1
                bar.update(1)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                epoch_done = self.step % self.steps_per_epoch == 0
                checkpoint_due = self.step % cfg.checkpoint_every == 0 and self.step < last_step
                # a log line checks the loss is finite: one comes before every checkpoint
                if self.step % cfg.log_every == 0 or epoch_done or checkpoint_due or self.step == last_step:
                    record = {k: float(v) / count for k, v in sums.items()}  # one host sync per log line
                    seconds = time.perf_counter() - tic
                    self.train_seconds += seconds
                    record.update(step=self.step, epoch=self.step / self.steps_per_epoch, seconds=self.train_seconds,
                                  images_per_s=(self.step - tic_step) * cfg.batch_size / max(seconds, 1e-9))
                    self._check_finite(record)
                    self._log(record)
                    bar.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "gain") if k in record})
                    sums, count, tic, tic_step = {}, 0, time.perf_counter(), self.step
                    if epoch_done:
                        summary = {**record, "epoch": self.step // self.steps_per_epoch}
                        self._fire("on_epoch_end", summary)
                        yield summary
                if checkpoint_due:
                    self.save()
            if self._signal is not None:
                name = signal.Signals(self._signal).name
                self.stop_reason = f"interrupted by {name} at step {self.step}"
            else:
                self.stop_reason = "finished"
            self.save()
            if self.is_main and self._signal is not None:
                tqdm.write(f"{self.stop_reason}; checkpoint saved in {self.out_dir}; "
                           f"continue with --resume (equimod-edu train --out {self.out_dir} --resume)")
            self._fire("on_train_end", {"step": self.step, "stop_reason": self.stop_reason})
        finally:
            bar.close()
            self._restore_signal_handlers(previous)

    def run(self) -> list[dict]:
        """Train to the end; returns the per-epoch metrics."""
        return list(self.epochs())

    # ---- bookkeeping --------------------------------------------------------------------------------
    def _check_finite(self, record: dict) -> None:
        if not all(math.isfinite(v) for k, v in record.items() if k in ("loss", "inv", "equi")):
            last = self.out_dir / CHECKPOINT_NAME
            kept = f"the last good checkpoint is kept: {last}" if last.exists() else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"the loss became non-finite by step {self.step} ({record}); training stopped and {kept}. "
                f"Try a lower lr (now {self.cfg.lr}) or precision='fp32'.")

    def _log(self, record: dict) -> None:
        self.history.append(record)
        if self.is_main:
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        self._fire("on_log", record)

    def _write_run_files(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        env = {**environment(), "device": str(self.device), "world_size": self.world, "bf16": self.bf16,
               "channels_last": self.channels_last, "steps_per_epoch": self.steps_per_epoch,
               "total_steps": self.total_steps}
        (self.out_dir / "environment.json").write_text(json.dumps(env, indent=2))

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": {"name": "warmup_cosine", "base_lr": self.cfg.lr, "warmup_steps": self.warmup_steps,
                             "total_steps": self.total_steps},
                "step": self.step, "epoch": self.step / self.steps_per_epoch,
                "rng": {"torch": torch.get_rng_state()}, "config": self.cfg.to_dict(),
                "metrics": self.history, "stop_reason": self.stop_reason, "train_seconds": self.train_seconds,
                "version": __version__}

    def save(self) -> None:
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_checkpoint(self.out_dir / CHECKPOINT_NAME, self.state())

    def _resume(self) -> None:
        path = self.out_dir / CHECKPOINT_NAME
        if not path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        state = load_checkpoint(path, map_location=self.device)
        saved = TrainConfig.from_dict(state["config"])
        for name in ("base", "equimod", "backbone", "dataset", "augment", "batch_size", "epochs", "seed"):
            if getattr(saved, name) != getattr(self.cfg, name):
                raise ValueError(f"--resume: the checkpoint was trained with {name}={getattr(saved, name)!r}, "
                                 f"this config says {getattr(self.cfg, name)!r}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.history = state["step"], list(state["metrics"])
        self.train_seconds = state.get("train_seconds", 0.0)
        torch.set_rng_state(state["rng"]["torch"].cpu())

    def _install_signal_handlers(self):
        import threading
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            self._signal = signum  # the loop saves a checkpoint after the current step and stops

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def _restore_signal_handlers(self, previous) -> None:
        for s, h in (previous or {}).items():
            signal.signal(s, h)


def train(cfg: TrainConfig, callbacks: Optional[dict[str, list[Callback]]] = None, resume: bool = False) -> Trainer:
    """Build a Trainer, run it to the end, return it (history in trainer.history)."""
    trainer = Trainer(cfg, callbacks=callbacks, resume=resume)
    trainer.run()
    return trainer
