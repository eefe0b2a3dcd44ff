"""The supervised reference: the same backbone trained with the labels, and label efficiency.

Self-supervised numbers need a scale. Two references come from here:

- ``train_supervised``: the backbone of a run trained from scratch with cross-entropy on the
  target label (crop + flip views, no colour augmentation: objectives.Supervised, run by the
  Trainer like any objective), saved as a run folder that ``evaluate_run`` reads like any other.
  Its probes say what this architecture can extract from these images when it is told the answer.
- ``label_efficiency``: accuracy against the number of labels per class, for a linear probe on
  frozen features (each self-supervised model) and for a network trained from scratch on the same
  few labels (UvA's SimCLR tutorial shows the same curve). Self-supervision pays where labels
  are few.

    equimod-edu compare --variants simclr,supervised --seeds 0     # the supervised run is a variant
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch

from .checkpoint import CHECKPOINT_NAME, build_model, load_checkpoint
from .config import TrainConfig
from .data import load_dataset
from .dataset import ImageDataset
from .models import EquiModModel, resolve_device
from .run_folder import REUSABLE_CHANGES, changed_settings, describe_changes
from .train import Trainer

__all__ = ["train_supervised", "per_class_subset", "label_efficiency", "label_efficiency_figure"]


def train_supervised(cfg: TrainConfig, dataset: Optional[ImageDataset] = None, steps: Optional[int] = None,
                     save: bool = True, progress: bool = False, overwrite: bool = False,
                     log=print) -> tuple[EquiModModel, dict]:
    """Train ``cfg``'s backbone with labels (cross-entropy on ``dataset.target``).

    A Trainer run with ``objective="supervised"`` (objectives.Supervised).

    cfg: a TrainConfig (its backbone, augmentation crop/flip, batch size, lr, epochs, seed,
        out_dir; the model is built with ``equimod=False``). AdamW in float32 with the run's
        warm-up + cosine schedule; a linear classifier on h is trained with it and kept in the
        checkpoint ("heads").
    dataset: the labelled images, used whole (default: the config's training split, first
        ``train_subset``).
    steps: optimiser steps, without warm-up (default ``epochs * len(dataset) // batch_size``,
        after ``warmup_epochs``). With very few labels the batch is the whole set.
    save: train into ``cfg.out_dir`` (an existing finished run of the same settings is reused, an
        unfinished one resumed); False: into a temporary folder, deleted afterwards.
    overwrite: a run of other settings in ``cfg.out_dir`` is trained again (said with ``log``);
        False: refused (ValueError).
    Returns ``(model in eval mode, {"train_acc", "loss", "steps", "seconds"})``.
    """
    data = dataset if dataset is not None else load_dataset(cfg.dataset, "train", cfg.data_root)
    n = len(data) if dataset is not None else min(len(data), cfg.train_subset or len(data))
    batch = min(cfg.batch_size, n)
    per_epoch = n // batch
    # the reference's recipe: AdamW, float32 images in NCHW layout (as the shipped reference was trained:
    # channels_last convolutions round differently), one log line and one checkpoint per epoch
    cfg = dataclasses.replace(cfg, objective="supervised", equimod=False, optimizer="adamw", precision="fp32",
                              channels_last=False, batch_size=batch, progress=progress,
                              train_subset=cfg.train_subset if dataset is None else None,
                              warmup_epochs=0 if steps else cfg.warmup_epochs,
                              log_every=per_epoch, checkpoint_every=per_epoch)
    with contextlib.ExitStack() as stack:
        if not save:
            cfg = dataclasses.replace(cfg, out_dir=stack.enter_context(tempfile.TemporaryDirectory()))
        path = Path(cfg.out_dir) / CHECKPOINT_NAME
        state = load_checkpoint(path) if path.exists() else None
        changed = changed_settings(state["config"], cfg, REUSABLE_CHANGES) if state is not None else []
        if changed:
            another = f"{cfg.out_dir} holds a run {describe_changes(state['config'], cfg, changed)}"
            if not overwrite:
                raise ValueError(f"{another}: choose another out_dir, or pass overwrite=True to train it again")
            log(f"{another}: training it again")
            state = None
        if state is not None and state.get("stop_reason") == "finished":  # done before, the same settings: reuse it
            model = build_model(state, resolve_device(cfg.device))
            history, step, seconds = state["metrics"], state["step"], state.get("train_seconds", 0.0)
        else:
            trainer = Trainer(cfg, dataset=data, resume=state is not None, overwrite=state is None, steps=steps)
            trainer.run()
            if trainer.stop_reason != "finished":  # Ctrl-C / SIGTERM: the checkpoint is saved, stop here
                raise KeyboardInterrupt(f"{trainer.stop_reason}; run the same command again to continue")
            model, history, step, seconds = trainer.model.eval(), trainer.history, trainer.step, trainer.train_seconds
    last = history[-1] if history else {}
    return model, {"train_acc": last.get("train_acc"), "loss": last.get("loss"), "steps": step, "seconds": seconds}


def per_class_subset(ds: ImageDataset, per_class: int, seed: int = 0) -> ImageDataset:
    """``per_class`` images of each class of the target (a seeded random choice).

    Fewer for a class that has fewer.
    """
    return ds.subset(_subset_rows(ds, per_class, seed))


def label_efficiency(models: dict[str, tuple[EquiModModel, TrainConfig]], train_set: ImageDataset,
                     test_set: ImageDataset, per_class: Sequence[int] = (1, 10, 100, 1000),
                     scratch: Optional[TrainConfig] = None, scratch_steps: int = 300, seed: int = 0,
                     log=print) -> dict:
    """Test accuracy on the target against labels per class.

    models: name -> (frozen model, its TrainConfig): a linear probe (probes.linear_probe) on its
        frozen h, fitted on ``k`` labelled training images per class, for each ``k`` in per_class.
    scratch: a TrainConfig for a network trained from scratch on the same ``k`` labels per class
        (``train_supervised``, ``max(scratch_steps, epochs over the subset)`` steps), then
        scored on the test set by its own classifier (through a probe on its h).
    Returns ``{"per_class": [...], "curves": {name: [accuracy per k]}, "n_test", "chance"}``.
    """
    from .probes import extract_features, linear_probe

    if not per_class or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 for k in per_class):
        raise ValueError(f"per_class: labels per class must be whole numbers >= 1, got {list(per_class)}")
    curves: dict[str, list[float]] = {}
    for name, (model, cfg) in models.items():
        aug = cfg.augmentation()
        train_h, test_h = extract_features(model, train_set, aug)["h"], extract_features(model, test_set, aug)["h"]
        curves[name] = []
        for k in per_class:
            rows = _subset_rows(train_set, k, seed)
            curves[name].append(linear_probe(train_h[rows], train_set.targets[rows], test_h,
                                             test_set.targets)["top1"])
        log(f"label efficiency, {name}: " + ", ".join(f"{k}/class {a:.3f}" for k, a in zip(per_class, curves[name])))
    if scratch is not None:
        curves["supervised from scratch"] = []
        for k in per_class:
            subset = per_class_subset(train_set, k, seed)
            per_epoch = max(1, len(subset) // min(scratch.batch_size, len(subset)))
            model, _ = train_supervised(scratch, subset, steps=max(scratch_steps, scratch.epochs * per_epoch),
                                        save=False)
            aug = scratch.augmentation()
            a, b = extract_features(model, subset, aug)["h"], extract_features(model, test_set, aug)["h"]
            curves["supervised from scratch"].append(linear_probe(a, subset.targets, b, test_set.targets)["top1"])
            log(f"label efficiency, supervised from scratch: {k}/class {curves['supervised from scratch'][-1]:.3f}")
    n_classes = len(test_set.classes.get(test_set.target, [])) or int(test_set.targets.max()) + 1
    return {"per_class": list(per_class), "curves": curves, "n_test": len(test_set), "chance": 1.0 / n_classes}


def _subset_rows(ds: ImageDataset, per_class: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = ds.targets.cpu()
    rows = [r[torch.randperm(len(r), generator=g)[:per_class]]
            for r in ((labels == c).nonzero().flatten() for c in labels.unique().tolist())]
    return torch.cat(rows).sort().values


def label_efficiency_figure(result: dict):
    """Accuracy (held-out) against labels per class, log x axis; one line per curve, chance dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for name, curve in result["curves"].items():
        style = dict(linestyle="--", marker="s") if name == "supervised from scratch" else dict(marker="o")
        ax.plot(result["per_class"], curve, label=name, **style)
    ax.axhline(result["chance"], color="grey", linewidth=0.8, linestyle=":", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images per class")
    ax.set_ylabel(f"test accuracy ({result['n_test']} images)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Label efficiency: a linear probe on frozen features vs training from scratch", fontsize=9)
    fig.tight_layout()
    return fig
