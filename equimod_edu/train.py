"""Training EquiMod (or plain SimCLR / BYOL, or the supervised reference) end to end.

One config, one loop, pluggable objectives, callbacks.

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

What is optimised is an objective (objectives.py), chosen by ``cfg.objective`` in
``OBJECTIVES``: the SimCLR / BYOL base with the EquiMod module, that base plus an
augmentation-aware peer (AugSelf, CASSLE, E-SSL, CARE, a split space: augself.py, cassle.py,
essl.py, care.py, split.py), or supervised cross-entropy.
One step (docs/design.md section 1), ``Trainer.train_step``: the batch the objective needs
(views = x_o, (x_1, t_1), (x_2, t_2), labels); out = objective(model, batch), e.g.
model(x_o, x_1, x_2, t_1, t_2); loss = L_inv + lambda * L_equi; optimiser step; BYOL EMA.
Everything random in a step comes from generators seeded by (seed, epoch) for the data order and
(seed, step) for the augmentations, so a resumed run replays the uninterrupted one.

Side jobs are callbacks (minGPT), objects with ``attach(trainer)``: the progress bar
(``ProgressBar``) and the metrics log (``MetricsLog``, runs/<name>/metrics.jsonl) are
the default ones; the notebooks add ``live.LiveCurves`` and ``monitor.OnlineMonitor``. The config lives in config.py,
checkpoints in checkpoint.py, the run folder's files and errors in run_folder.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from . import __version__
from .allocator import keep_freed_memory
from .augment import Views
from .augment_cuda import augmenter_for
from .augself import AugSelf
from .care import CARE
from .cassle import CASSLE
from .checkpoint import describe
from .config import TrainConfig
from .data import load_dataset
from .dataset import ImageDataset, mix_seed
from .essl import ESSL
from .files import append_line, atomic_write
from .loader import FolderCrops, views_from_crops
from .models import EquiModModel, resolve_device
from .objectives import Batch, Objective, SelfSupervised, Supervised
from .optim import LARS, set_lr, warmup_cosine
from .run_folder import NonFiniteLossError, RunFolder, TrainingError
from .split import SplitSpace

__all__ = ["Trainer", "OBJECTIVES", "TrainingNet", "ProgressBar", "MetricsLog", "EVENTS", "environment", "native_bf16",
           "cpu_has_native_bf16"]

#: The objectives TrainConfig.objective names (a new one: its module, and one line here).
OBJECTIVES: dict[str, type[Objective]] = {"self-supervised": SelfSupervised, "augself": AugSelf, "cassle": CASSLE,
                                          "essl": ESSL, "care": CARE, "split": SplitSpace,
                                          "supervised": Supervised}


def _folder_path(dataset: str) -> Path:
    """'folder:PATH' -> PATH/train if that exists, else PATH (as data.load_dataset)."""
    path = Path(dataset[len("folder:"):])
    return path / "train" if (path / "train").is_dir() else path


# --------------------------------------------------------------------------------------------
# Environment: processes, what to record
# --------------------------------------------------------------------------------------------
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


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: what ``precision="auto"`` trains in.

    CUDA: yes (bf16 autocast, as the fast GPU path). CPU: only where the processor has bf16
    instructions (x86 AVX512-BF16 or AMX): measured on such a 2-core CPU at ``cpu-live``, a SimCLR
    step and an EquiMod step ran 1.4-1.9x faster under bf16 autocast over several benchmark runs
    (benchmarks/train_step.py --mode variants, benchmarks/cpu_options.py), with probes that agree with
    float32's within their spread over seeds (data/results/live.json against live_fp32.json).
    Without them oneDNN emulates bf16, slower than float32, so "auto" keeps float32.
    The choice is recorded in the run's environment.json ("bf16", "cpu_native_bf16").
    """
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_native_bf16()


def cpu_has_native_bf16() -> bool:
    """True where this CPU has bf16 instructions (AVX512-BF16 or AMX tiles); False where unknown."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


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
# Callbacks: objects whose attach(trainer) registers fn(trainer, metrics) for some events
# --------------------------------------------------------------------------------------------
Callback = Callable[["Trainer", dict], None]
#: on_train_begin: {"step"} before the first step; on_log: a metrics record every log_every steps;
#: on_epoch_end: the epoch's last record; on_train_end: {"step", "stop_reason"} after the last save.
#: on_step (fired only when a callback registered for it): after each train_step, {"step", "batch": the Batch,
#: "features": (N, D) detached h of x_o where the forward made it (Objective.features; else None), "indices": (N,)
#: this process's dataset rows (None when streaming), "metrics": the step's metrics (() tensors added there are
#: averaged and logged like the losses)};
#: on_record: a log record before it is checked and logged (a callback may add entries to it).
EVENTS = ("on_train_begin", "on_step", "on_record", "on_log", "on_epoch_end", "on_train_end")


class ProgressBar:
    """The tqdm bar of a run (rank 0 only), advanced at every log line, with the loss and gain."""

    def __init__(self):
        self.bar = None

    def begin(self, trainer: "Trainer", metrics: dict) -> None:
        self.bar = tqdm(total=trainer.last_step, initial=trainer.step, dynamic_ncols=True,
                        desc=trainer.objective.label, disable=not trainer.is_main)

    def log(self, trainer: "Trainer", metrics: dict) -> None:
        self.bar.update(trainer.step - self.bar.n)
        shown = ("loss", "gain", *(k for k in metrics if k.startswith(("online_", "heldout_", "knn_"))))  # monitor.py's
        self.bar.set_postfix({k.replace("_acc", ""): f"{metrics[k]:.3g}" for k in shown if k in metrics})

    def end(self, trainer: "Trainer", metrics: dict) -> None:
        self.bar.close()

    def attach(self, trainer: "Trainer") -> None:
        for event, fn in (("on_train_begin", self.begin), ("on_log", self.log), ("on_train_end", self.end)):
            trainer.add_callback(event, fn)


class MetricsLog:
    """Appends every log record to out_dir/metrics.jsonl (rank 0), each step exactly once.

    At the start of training the file is written afresh from the checkpoint's history (the records
    of the steps <= the resumed step; nothing for a new run): a resume after a kill does not repeat
    the steps it replays, and a line that failed to write is restored. The old file is never read.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def begin(self, trainer: "Trainer", metrics: dict) -> None:
        if not trainer.is_main:
            return
        kept = [record for record in trainer.history if record.get("step", math.inf) <= trainer.step]
        text = "".join(json.dumps(record) + "\n" for record in kept)
        atomic_write(self.path, lambda f: f.write(text.encode()))  # replaces a link, never writes through it

    def log(self, trainer: "Trainer", metrics: dict) -> None:
        if trainer.is_main:
            append_line(self.path, json.dumps(metrics))

    def attach(self, trainer: "Trainer") -> None:
        trainer.add_callback("on_train_begin", self.begin)
        trainer.add_callback("on_log", self.log)


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------
class TrainingNet(torch.nn.Module):
    """The model and the objective's heads as one module: what DDP and torch.compile wrap.

    ``net(batch)`` = ``objective(model, batch)``: every network of a step runs inside this call,
    so DDP averages the gradients of the heads too. Checkpoints keep the two apart ("model",
    "heads"), so a model's state dict is the same whatever trained it.
    """

    def __init__(self, model: EquiModModel, objective: Objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch: Batch):
        return self.objective(self.model, batch)


class Trainer:
    """Runs one training job (minGPT style: a loop with named callbacks, no framework).

    What is optimised: ``OBJECTIVES[cfg.objective]`` (objectives.py). Callbacks: objects with
    ``attach(trainer)`` (ProgressBar, MetricsLog, live.LiveCurves, monitor.OnlineMonitor), which register
    ``fn(trainer, metrics)`` for events of EVENTS with ``trainer.add_callback(event, fn)``. The
    metrics log and (with cfg.progress) the progress bar are attached first.
    dataset: train on this ImageDataset instead of the config's (tests, notebooks).
    steps: train this many optimiser steps instead of cfg.epochs epochs (the schedule spans them).
    resume: continue the run of cfg.out_dir; overwrite: delete the run already there and start over.
    A fresh run refuses a folder that holds another run (RunFolderError).
    """

    def __init__(self, cfg: TrainConfig, callbacks: Sequence = (), resume: bool = False,
                 dataset: Optional[ImageDataset] = None, overwrite: bool = False, steps: Optional[int] = None):
        cfg.validate()
        if cfg.objective not in OBJECTIVES:
            raise ValueError(f"TrainConfig.objective = {cfg.objective!r}: choose one of {sorted(OBJECTIVES)}")
        self.cfg = cfg
        self.rank, self.world, self.device = _init_distributed(resolve_device(cfg.device))
        if cfg.batch_size % self.world or cfg.batch_size // self.world < 2:
            raise ValueError(f"TrainConfig.batch_size = {cfg.batch_size}: must divide by the {self.world} processes, "
                             f"at least 2 images each")
        self.out_dir = Path(cfg.out_dir)
        self.folder = RunFolder(self.out_dir, resume, overwrite)
        self.is_main = self.rank == 0
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and native_bf16(self.device))
        self.freed_memory_kept = self.device.type == "cpu" and keep_freed_memory()  # no page faults per step
        self.channels_last = cfg.channels_last
        objective_type = OBJECTIVES[cfg.objective]
        self._load_data(dataset, objective_type, steps)

        torch.manual_seed(cfg.seed)
        self.model = EquiModModel(cfg.model_config()).to(self.device)
        n_classes = self._n_classes() if objective_type.needs.labels else None
        self.objective = objective_type(cfg, self.model, self.aug, n_classes).to(self.device)
        self._check_group_size(self.objective.needs.group_size)
        self.sync_bn = cfg.sync_bn if cfg.sync_bn is not None else (self.world > 1 and self.device.type == "cuda")
        if self.sync_bn and self.world > 1:  # every BatchNorm, the BYOL target's included (as the official code)
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.objective = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.objective)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.objective = self.objective.to(memory_format=torch.channels_last)
        self.optimizer = self._make_optimizer()
        self.net = TrainingNet(self.model, self.objective)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        if cfg.compile:
            self.net = torch.compile(self.net)

        self.step, self.history, self.stop_reason = 0, [], None
        self.train_seconds = 0.0  # wall time inside the loop, over all resumes (compute-matched comparisons)
        self._epoch_order, self._stream = (-1, None, None), None
        self._aug_generator = torch.Generator(device=self.device)
        self._signal, self._stop = None, False  # a signal received here; the stop all processes agreed on
        self.callbacks: dict[str, list[Callback]] = {event: [] for event in EVENTS}
        MetricsLog(self.folder.metrics).attach(self)
        if cfg.progress:
            ProgressBar().attach(self)
        for callback in callbacks:
            callback.attach(self)
        if resume:
            self._resume()

    # ---- setup helpers --------------------------------------------------------------------------
    def _load_data(self, dataset: Optional[ImageDataset], objective_type: type[Objective],
                   steps: Optional[int]) -> None:
        """The objective's augmentation, and the data: whole on the device, or streamed from a folder by workers."""
        cfg = self.cfg
        self.aug = objective_type.augmentation(cfg.augmentation())
        self.augmenter = augmenter_for(self.aug, self.device)  # on CUDA: the same pixels in fewer launches
        stream = cfg.stream if cfg.stream is not None else cfg.dataset.startswith("folder:")
        self.streaming = dataset is None and stream
        if self.streaming:  # too large for the device: workers decode and crop (loader.py)
            self.data = FolderCrops(_folder_path(cfg.dataset), self.aug, cfg.seed)
        else:  # small: the whole set as uint8 on the device
            self.data = dataset if dataset is not None else load_dataset(cfg.dataset, "train", cfg.data_root)
            self.data = self.data.to(self.device)
        self.n_images = min(len(self.data), cfg.train_subset or len(self.data))
        if self.n_images < cfg.batch_size:
            raise ValueError(f"TrainConfig.batch_size = {cfg.batch_size}: larger than the dataset "
                             f"({self.n_images} images)")
        self.steps_per_epoch = self.n_images // cfg.batch_size  # drop the last partial batch
        self.total_steps = steps or cfg.epochs * self.steps_per_epoch
        self.last_step = min(self.total_steps, cfg.max_steps or self.total_steps)
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)

    def _check_group_size(self, group_size: int) -> None:
        """Groups sharing one draw (Needs.group_size) must be cut from whole batches on the device."""
        if group_size and self.streaming:
            raise ValueError(f"objective {self.cfg.objective!r} shares one augmentation per group of {group_size} "
                             f"images, but streaming workers crop each image on its own: train on an in-memory "
                             f"dataset (stream=False)")
        if group_size and (self.cfg.batch_size // self.world) % group_size:
            raise ValueError(f"TrainConfig.batch_size = {self.cfg.batch_size}: each of the {self.world} processes "
                             f"must hold whole groups of {group_size} images (objective {self.cfg.objective!r})")

    def _n_classes(self) -> int:
        """The number of target classes: named by the dataset, else the largest label of the images used + 1."""
        classes = self.data.classes
        named = classes.get(self.data.target, []) if isinstance(classes, dict) else classes
        return len(named) or int(self.data.targets[: self.n_images].max()) + 1

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        groups = self.objective.param_groups(self.model)
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

    # ---- the batch of a step ------------------------------------------------------------------------
    def batch_indices(self, epoch: int, device=None) -> torch.Tensor:
        """``(steps_per_epoch, batch_size)`` dataset indices of this epoch's global batches.

        On the CPU, or (device=self.device) on the training device: copied there once per epoch, not
        once per step.
        """
        if self._epoch_order[0] != epoch:
            g = torch.Generator().manual_seed(mix_seed(self.cfg.seed, epoch))
            order = torch.randperm(self.n_images, generator=g)[: self.steps_per_epoch * self.cfg.batch_size]
            order = order.view(self.steps_per_epoch, self.cfg.batch_size)
            self._epoch_order = (epoch, order, order.to(self.device, non_blocking=True))
        return self._epoch_order[2] if device is not None else self._epoch_order[1]

    @property
    def local_rows(self) -> slice:
        """This process's share of a global batch."""
        b = self.cfg.batch_size
        return slice(self.rank * b // self.world, (self.rank + 1) * b // self.world)

    def _generator(self, step: int) -> torch.Generator:
        """The augmentation generator of `step`, seeded by (seed, step): the same on every process."""
        return self._aug_generator.manual_seed(mix_seed(self.cfg.seed, step + 1))

    def make_batch(self, images: torch.Tensor, step: int, labels: Optional[torch.Tensor] = None) -> Batch:
        """This process's share of the Batch of ``step`` from a global batch of images on the device.

        The images are ``(N, 3, H, W) uint8``; the labels ``(N,)`` are the global batch's, when the
        objective needs them.

        Parameters are drawn for the whole global batch and sliced, so any number of processes
        sees the same augmentations as one process would. With ``needs.grouped_pair`` the usual pair
        is drawn first (as for any objective), then x_3, x_4 from the same generator, shared within
        groups of ``needs.group_size``.
        """
        rows, generator, needs = self.local_rows, self._generator(step), self.objective.needs
        labels = labels[rows] if labels is not None else None
        if needs.views == 1:
            params = self.aug.sample(images.shape[0], tuple(images.shape[-2:]), generator, images.device)[rows]
            return Batch(x_1=self.augmenter.apply(images[rows], params), params_1=params,
                         t_1=self.augmenter.encode(params), labels=labels)
        if needs.grouped_pair:
            views = self.augmenter.views(images, generator, rows)
            grouped = self.augmenter.views(images, generator, rows, group_size=needs.group_size)
            return self._batch_of(views, labels, grouped)
        views = self.augmenter.views(images, generator, rows, group_size=needs.group_size)
        return self._batch_of(views, labels)

    def _batch_of(self, views: Views, labels: Optional[torch.Tensor], grouped: Optional[Views] = None) -> Batch:
        """The Batch of a step's Views: what the objective needs, and t = encode(params).

        grouped: the extra group-shared pair (``needs.grouped_pair``), as x_3, x_4 (its x_o unused).
        """
        needs = self.objective.needs
        two = needs.views == 2
        batch = Batch(x_o=views.x_o if needs.x_o else None, x_1=views.x_1, x_2=views.x_2 if two else None,
                      params_1=views.params_1, params_2=views.params_2 if two else None,
                      t_1=self.augmenter.encode(views.params_1),
                      t_2=self.augmenter.encode(views.params_2) if two else None, labels=labels)
        if grouped is None:
            return batch
        return batch._replace(x_3=grouped.x_1, x_4=grouped.x_2, params_3=grouped.params_1, params_4=grouped.params_2,
                              t_3=self.augmenter.encode(grouped.params_1), t_4=self.augmenter.encode(grouped.params_2))

    def next_batch(self, step: int) -> Batch:
        """The Batch of ``step`` for this process.

        Made from the images on the device, or (streaming) from the crops the DataLoader workers cut
        (``loader.views_from_crops``).
        """
        epoch, i = divmod(step, self.steps_per_epoch)
        needs_labels = self.objective.needs.labels
        if not self.streaming:  # a gather on the device, from the epoch's order already there
            index = self.batch_indices(epoch, self.device)[i]
            return self.make_batch(self.data.images[index], step, self.data.targets[index] if needs_labels else None)
        order = self.batch_indices(epoch)
        if self._stream is None or self._stream[0] != epoch:
            from torch.utils.data import DataLoader
            self.data.set_epoch(epoch)
            batches = [order[s, self.local_rows].tolist() for s in range(i, self.steps_per_epoch)]
            loader = DataLoader(self.data, batch_sampler=batches, num_workers=self.cfg.num_workers,
                                pin_memory=self.device.type == "cuda")
            self._stream = (epoch, iter(loader))
        images, crops, labels = next(self._stream[1])
        views = views_from_crops(images, crops, self.aug, self._generator(step), self.device, self.augmenter)
        return self._batch_of(views, labels.to(self.device) if needs_labels else None)

    # ---- one step -------------------------------------------------------------------------------
    def train_step(self, step: int, batch: Batch) -> dict:
        """One optimiser step on ``batch``; returns the detached losses and diagnostics, and "lr".

        The images in the model's memory layout, the objective's forward and losses, backward,
        optimiser step, its after_step (BYOL's EMA).
        """
        if self.channels_last:
            batch = batch._replace(**{k: getattr(batch, k).contiguous(memory_format=torch.channels_last)
                                      for k in ("x_o", "x_1", "x_2", "x_3", "x_4") if getattr(batch, k) is not None})
        lr = warmup_cosine(step, self.total_steps, self.warmup_steps, self.cfg.lr)
        set_lr(self.optimizer, lr)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.net(batch)
            losses = self.objective.losses(out, batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        self.objective.after_step(self.model, step, self.total_steps)
        metrics: dict = {k: v.detach() for k, v in losses.items()}
        metrics["lr"] = lr  # a Python float: no tensor made from host data inside a step
        if self.callbacks["on_step"]:  # e.g. monitor.OnlineMonitor; no work at all without one
            epoch, i = divmod(step, self.steps_per_epoch)
            indices = None if self.streaming else self.batch_indices(epoch, self.device)[i, self.local_rows]
            features = self.objective.features(out)
            self._fire("on_step", {"step": step, "batch": batch, "indices": indices, "metrics": metrics,
                                   "features": None if features is None else features.detach()})
        return metrics

    # ---- the loop ---------------------------------------------------------------------------------
    def epochs(self) -> Iterator[dict]:
        """Train, yielding one metrics dict per finished epoch. Ctrl-C / SIGTERM: save and stop.

        The run folder is locked meanwhile (files.RunLock): a second training into it is refused.
        """
        lock = self.folder.lock() if self.is_main else contextlib.nullcontext()
        with lock:
            yield from self._epochs()

    def _epochs(self) -> Iterator[dict]:
        if self.is_main:
            self.folder.prepare()
            self._write_run_files()
        previous = None
        try:  # the handlers are restored whatever happens, a callback failing at the start included
            previous = self._install_signal_handlers()
            self._fire("on_train_begin", {"step": self.step})
            yield from self._loop()
        finally:
            self._restore_signal_handlers(previous)

    def _loop(self) -> Iterator[dict]:
        """The steps, logs and checkpoints to the last step; an error ends the callbacks and says what was saved."""
        try:
            self.model.train()
            self.objective.train()
            sums, tic, tic_step = {}, time.perf_counter(), self.step
            while self.step < self.last_step and not self._stop:
                for k, v in self.train_step(self.step, self.next_batch(self.step)).items():
                    sums[k] = sums.get(k, 0.0) + v
                self.step += 1
                if self.world == 1:  # alone: stop right after the step a signal came in
                    self._stop = self._signal is not None
                if self._log_due():  # a log line checks the loss is finite: one comes before every checkpoint
                    record = self._record(sums, self.step - tic_step, time.perf_counter() - tic)
                    sums, tic, tic_step = {}, time.perf_counter(), self.step
                    if self.step % self.steps_per_epoch == 0:
                        summary = {**record, "epoch": self.step // self.steps_per_epoch}
                        self._fire("on_epoch_end", summary)
                        yield summary
                if self._checkpoint_due():
                    self.save()
            self._finish()
        except BaseException as error:  # an error, or the caller closing the generator: end the callbacks too
            self.stop_reason = f"stopped at step {self.step} by {type(error).__name__}"
            self._fire("on_train_end", {"step": self.step, "stop_reason": self.stop_reason})
            if isinstance(error, (NonFiniteLossError, TrainingError, GeneratorExit, KeyboardInterrupt)):
                raise
            raise TrainingError(self.folder.stopped_by(error, self.step, self.save)) from error

    def _checkpoint_due(self) -> bool:
        return self.step % self.cfg.checkpoint_every == 0 and self.step < self.last_step

    def _log_due(self) -> bool:
        return (self.step % self.cfg.log_every == 0 or self.step % self.steps_per_epoch == 0
                or self._checkpoint_due() or self.step == self.last_step)

    def _reduce(self, sums: dict) -> tuple[dict, bool]:
        """The metric sums as floats, averaged over the processes, and whether any process was signalled.

        One all-reduce per log line, at the same steps on every rank: all ranks see the same stop
        flag and stop after the same step (a rank that went on alone would wait in DDP forever), and
        the logged loss is the global mean, not rank 0's share. The one host sync of a log line.
        """
        keys = list(sums)
        parts = [torch.as_tensor(sums[k], dtype=torch.float32).to(self.device) for k in keys]
        vector = torch.stack(parts + [torch.tensor(float(self._signal is not None)).to(self.device)])
        if self.world > 1:
            dist.all_reduce(vector)
            vector[:-1] /= self.world
        values = vector.tolist()
        return dict(zip(keys, values[:-1])), values[-1] > 0

    def _record(self, sums: dict, steps: int, seconds: float) -> dict:
        """The mean of the summed metrics over `steps` steps and processes, checked and logged."""
        totals, stop = self._reduce(sums)
        self._stop = self._stop or stop
        record = {k: v / steps for k, v in totals.items()}
        self.train_seconds += seconds
        record.update(step=self.step, epoch=self.step / self.steps_per_epoch, seconds=self.train_seconds,
                      images_per_s=steps * self.cfg.batch_size / max(seconds, 1e-9))
        self._fire("on_record", record)
        self.folder.check_finite(record, self.objective.checked, self.step, self.cfg)
        self.history.append(record)
        self._fire("on_log", record)
        return record

    def _finish(self) -> None:
        """The final checkpoint, the stop reason, and how to continue after an interruption."""
        self._stream = None  # let the DataLoader workers of a streamed epoch go
        if self._signal is not None:
            self.stop_reason = f"interrupted by {signal.Signals(self._signal).name} at step {self.step}"
        elif self._stop:
            self.stop_reason = f"interrupted at step {self.step} (another process was signalled)"
        else:
            self.stop_reason = "finished"
        self.save()
        self._fire("on_train_end", {"step": self.step, "stop_reason": self.stop_reason})
        if self.is_main and self._stop:
            tqdm.write(f"{self.stop_reason}; checkpoint saved in {self.out_dir}; "
                       f"continue with --resume (equimod-edu train --out {self.out_dir} --resume)")

    def run(self) -> list[dict]:
        """Train to the end; returns the per-epoch metrics."""
        return list(self.epochs())

    # ---- the run's files: config, environment, checkpoint ----------------------------------------------
    def _write_run_files(self) -> None:
        env = {**environment(), "device": str(self.device), "world_size": self.world, "bf16": self.bf16,
               "cpu_native_bf16": cpu_has_native_bf16(), "freed_memory_kept": self.freed_memory_kept,
               "sync_bn": self.sync_bn,
               "channels_last": self.channels_last, "steps_per_epoch": self.steps_per_epoch,
               "total_steps": self.total_steps}
        self.folder.write_json("config.json", self.cfg.to_dict())
        self.folder.write_json("environment.json", env)

    def state(self) -> dict:
        """Everything a checkpoint holds (see checkpoint.py); "heads": the objective's own modules."""
        return {"model": self.model.state_dict(), "heads": self.objective.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": {"name": "warmup_cosine", "base_lr": self.cfg.lr, "warmup_steps": self.warmup_steps,
                             "total_steps": self.total_steps},
                "step": self.step, "epoch": self.step / self.steps_per_epoch,
                "rng": {"torch": torch.get_rng_state()}, "config": self.cfg.to_dict(), **describe(self.cfg),
                "metrics": self.history, "stop_reason": self.stop_reason, "train_seconds": self.train_seconds,
                "objective": self.cfg.objective, "version": __version__}

    def save(self) -> None:
        """Write the checkpoint (rank 0), after checking that the parameters and optimiser state are finite."""
        if not self.is_main:
            return
        optimizer_state = [v for state in self.optimizer.state.values() for v in state.values()]
        weights = [*self.model.state_dict().values(), *self.objective.state_dict().values()]
        self.folder.save(self.state(), [*weights, *optimizer_state], self.step, self.cfg)

    def _resume(self) -> None:
        state = self.folder.load(self.cfg, self.device)
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state.get("heads", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.history = state["step"], list(state["metrics"])
        self.train_seconds = state.get("train_seconds", 0.0)
        torch.set_rng_state(state["rng"]["torch"].cpu())

    # ---- signals: stop after the current step -----------------------------------------------------
    def _install_signal_handlers(self):
        import threading
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            # the loop stops after this step (several processes: after the next log line, together)
            self._signal = signum

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def _restore_signal_handlers(self, previous) -> None:
        for s, h in (previous or {}).items():
            signal.signal(s, h)
