"""The supervised reference: the same backbone trained with the labels, and label efficiency.

Self-supervised numbers need a scale. Two references come from here:

- :func:`train_supervised`: the backbone of a run trained from scratch with cross-entropy on the
  target label (crop + flip views, no colour augmentation), saved as a run folder that
  ``evaluate_run`` reads like any other. Its probes say what this architecture can extract from
  these images when it is told the answer.
- :func:`label_efficiency`: accuracy against the number of labels per class, for a linear probe on
  frozen features (each self-supervised model) and for a network trained from scratch on the same
  few labels (UvA's SimCLR tutorial shows the same curve). Self-supervision pays where labels
  are few.

    equimod-edu compare --variants simclr,supervised --seeds 0     # the supervised run is a variant
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import __version__
from .augment import AugmentationConfig, apply
from .data import load_dataset
from .dataset import ImageDataset, mix_seed
from .models import EquiModModel, resolve_device
from .optim import set_lr, warmup_cosine
from .checkpoint import CHECKPOINT_NAME, describe, load_checkpoint, save_checkpoint
from .config import TrainConfig

__all__ = ["supervised_augmentation", "train_supervised", "per_class_subset", "label_efficiency",
           "label_efficiency_figure"]


def supervised_augmentation(aug: AugmentationConfig) -> AugmentationConfig:
    """The views of supervised training: the run's crop and flip, no colour jitter, no grayscale."""
    return aug.replace(jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0)


def _build(cfg: TrainConfig, n_classes: int, device) -> tuple[EquiModModel, nn.Linear]:
    model = EquiModModel(cfg.model_config()).to(device)
    return model, nn.Linear(model.feature_dim, n_classes).to(device)


def train_supervised(cfg: TrainConfig, dataset: Optional[ImageDataset] = None, steps: Optional[int] = None,
                     save: bool = True, progress: bool = False) -> tuple[EquiModModel, dict]:
    """Train ``cfg``'s backbone with labels (cross-entropy on ``dataset.target``).

    cfg: a TrainConfig (its backbone, augmentation crop/flip, batch size, lr, epochs, seed,
        out_dir; the model is built with ``equimod=False``). AdamW with the run's warm-up +
        cosine schedule; a linear classifier on h is trained with it and kept in the checkpoint.
    dataset: the labelled images (default: the config's training split, first ``train_subset``).
    steps: optimiser steps (default ``epochs * len(dataset) // batch_size``). With very few
        labels the batch is the whole set.
    save: write ``cfg.out_dir/checkpoint.pt`` (after every epoch and at the end; an existing
        finished checkpoint is reused, an unfinished one resumed).
    Returns ``(model in eval mode, {"train_acc", "loss", "steps", "seconds"})``.
    """
    cfg = TrainConfig.from_dict({**cfg.to_dict(), "equimod": False})
    cfg.validate()
    device = resolve_device(cfg.device)
    data = dataset if dataset is not None else load_dataset(cfg.dataset, "train", cfg.data_root)
    if dataset is None and cfg.train_subset:
        data = data.subset(slice(0, cfg.train_subset))
    data = data.to(device)
    n, labels = len(data), data.targets
    n_classes = len(data.classes.get(data.target, [])) or int(labels.max()) + 1
    batch = min(cfg.batch_size, n)
    per_epoch = max(1, n // batch)
    total = steps or cfg.epochs * per_epoch
    warmup = round(cfg.warmup_epochs * per_epoch) if steps is None else 0
    aug = supervised_augmentation(cfg.augmentation())
    out_dir, path = Path(cfg.out_dir), Path(cfg.out_dir) / CHECKPOINT_NAME

    torch.manual_seed(cfg.seed)
    model, classifier = _build(cfg, n_classes, device)
    params = list(model.backbone.parameters()) + list(classifier.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=max(cfg.weight_decay, 0.0))
    step, history, seconds = 0, [], 0.0
    if save and path.exists():
        state = load_checkpoint(path, map_location=device)
        model.load_state_dict(state["model"])
        classifier.load_state_dict(state["classifier"])
        optimizer.load_state_dict(state["optimizer"])
        step, history, seconds = state["step"], list(state["metrics"]), state.get("train_seconds", 0.0)
    g = torch.Generator(device=device)
    tic, correct, seen, loss_sum = time.perf_counter(), 0, 0, 0.0
    model.train()
    from tqdm.auto import tqdm
    bar = tqdm(total=total, initial=step, desc="supervised", disable=not progress, dynamic_ncols=True)
    while step < total:
        epoch, i = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(cfg.seed, epoch)))
        index = order[i * batch:(i + 1) * batch].to(device)
        g.manual_seed(mix_seed(cfg.seed, step + 1))
        x = apply(data.images[index], aug.sample(len(index), tuple(data.images.shape[-2:]), g, device), aug)
        set_lr(optimizer, warmup_cosine(step, total, warmup, cfg.lr))
        logits = classifier(model.features(x))
        loss = F.cross_entropy(logits, labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        correct = correct + (logits.detach().argmax(1) == labels[index]).sum()  # tensors: no host sync per step
        seen, loss_sum = seen + len(index), loss_sum + loss.detach() * len(index)
        if step % per_epoch == 0 or step == total:
            seconds, tic = seconds + time.perf_counter() - tic, time.perf_counter()
            record = {"step": step, "epoch": step / per_epoch, "loss": float(loss_sum) / seen,
                      "train_acc": float(correct) / seen,
                      "seconds": seconds}
            if not math.isfinite(record["loss"]):
                raise RuntimeError(f"supervised training: the loss became non-finite at step {step}; lower lr")
            history.append(record)
            correct, seen, loss_sum = 0, 0, 0.0
            if save:
                out_dir.mkdir(parents=True, exist_ok=True)
                save_checkpoint(path, {
                    "model": model.state_dict(), "classifier": classifier.state_dict(),
                    "optimizer": optimizer.state_dict(), "step": step, "epoch": step / per_epoch,
                    "config": cfg.to_dict(), **describe(cfg), "metrics": history, "objective": "supervised",
                    "stop_reason": "finished" if step == total else None, "train_seconds": seconds,
                    "version": __version__})
    bar.close()
    last = history[-1] if history else {}
    return model.eval(), {"train_acc": last.get("train_acc"), "loss": last.get("loss"), "steps": step,
                          "seconds": seconds}


def per_class_subset(ds: ImageDataset, per_class: int, seed: int = 0) -> ImageDataset:
    """``per_class`` images of each class of the target (a seeded random choice; fewer if a class
    has fewer)."""
    return ds.subset(_subset_rows(ds, per_class, seed))


def label_efficiency(models: dict[str, tuple[EquiModModel, TrainConfig]], train_set: ImageDataset,
                     test_set: ImageDataset, per_class: Sequence[int] = (1, 10, 100, 1000),
                     scratch: Optional[TrainConfig] = None, scratch_steps: int = 300, seed: int = 0,
                     log=print) -> dict:
    """Test accuracy on the target against labels per class.

    models: name -> (frozen model, its TrainConfig): a linear probe (probes.linear_probe) on its
        frozen h, fitted on ``k`` labelled training images per class, for each ``k`` in per_class.
    scratch: a TrainConfig for a network trained from scratch on the same ``k`` labels per class
        (:func:`train_supervised`, ``max(scratch_steps, epochs over the subset)`` steps), then
        scored on the test set by its own classifier (through a probe on its h).
    Returns ``{"per_class": [...], "curves": {name: [accuracy per k]}, "n_test", "chance"}``.
    """
    from .probes import extract_features, linear_probe

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
