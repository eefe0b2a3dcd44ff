"""What h is for, measured while a run trains: an online linear probe and a kNN monitor (a Trainer callback).

    monitor = OnlineMonitor()                          # the target ("shape") and "colour" when the set has it
    Trainer(cfg, callbacks=[monitor, LiveCurves()]).run()
    # metrics.jsonl: "online_shape_acc" every log line; "heldout_shape_acc" and "knn_shape_acc" at each
    # epoch end; "shape_chance"

Two read-outs of the backbone features h, as solo-learn and lightly train beside SSL, both on h of the
ORIGINALS x_o (the un-augmented images, normalised as the model sees them), what the offline probe reads:

- online: one linear classifier per label column (BatchNorm without affine, then Linear, zero-initialised,
  Adam). At every step it reads the detached h of x_o of the first ``rows`` images of the batch (this
  process's rows): h comes from the step's own forward where it holds x_o (EquiMod: out.h[:N],
  ``Objective.features``; no extra work), else from one no-grad forward of ``model.features`` in eval
  mode (BatchNorm's running statistics used and left unchanged, every module's mode restored, no random
  number drawn) on x_o = augmenter.original(the batch's images). Its accuracy on these images is measured
  BEFORE it learns from them (unseen by it: a held-out-like estimate; the loop averages it over each log
  interval and the processes); then they join a memory of the latest ``memory`` (h, image) pairs, and
  the classifier takes one Adam step on ``learn_rows`` pairs drawn from it (a few images a step are too
  few to learn from). No gradient reaches the model and the labels never reach the representation's
  loss: training is exactly the same with and without the monitor.
  Why originals: measured at cpu-live, SimCLR, seed 0, where the offline probe of the finished model
  reads shape 0.60 / colour 0.52, a probe on the h of augmented view 1 ended at 0.27 / 0.10 (crops hide
  the shape, hue jitter recolours the object: it measured the augmentation more than h).
  How close it gets (same run, bf16; ``benchmarks/monitor_accuracy.py``): at the last epoch end the
  held-out accuracy (below) is 0.48 / 0.33 with rows 8, the default, and 0.46 / 0.40 with rows 64, the
  whole batch: 0.12-0.19 below the offline probe, not within 0.05. Mostly labels, not drift: the memory
  makes it a probe of about ``memory`` labelled images, where the offline probe fits 8,000. On the
  finished model's fixed features, this classifier fitted on 600, 2,000, 4,000 and 8,000 labelled images
  reads shape 0.37, 0.48, 0.53 and 0.57, and run online there (rows 8, memory 1,024) 0.50 / 0.37; rows 64
  with memory 4,096 gives 0.51 / 0.43. So the online line shows the trend while training runs; the offline
  probe of the finished model is the number to report.
- held-out: at each epoch end, each online classifier as it stands scores the fixed test images of the kNN
  below (images it never learns from): the online probe's accuracy with less noise than the per-step line,
  on held-out images as the offline probe's.
- kNN: at each epoch end, weighted k-NN (probes.knn_accuracy) from a small fixed bank of training images
  to a small fixed set of test images (seeded subsets of the run's splits), on h of their originals
  computed the same way (eval mode, no gradients, bf16 where the run trains in bf16). The defaults keep it
  under about 2 % of a cpu-live epoch.

Distributed: each process trains its own classifiers on its rows; the kNN runs on rank 0 only (its
keys are in rank 0's records, the only ones logged). Resume: the monitor restarts (fresh classifiers;
it is not checkpointed), so its accuracy starts again from chance after a resume.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import load_dataset
from .dataset import ImageDataset, shuffled_subset
from .objectives import Objective
from .probes import knn_accuracy

__all__ = ["OnlineMonitor", "OnlineClassifier", "default_columns", "original_features"]


def default_columns(data: ImageDataset) -> list[str]:
    """The dataset's target, and "colour" when the dataset has that class column."""
    return [data.target] + [c for c in ("colour",) if c in data.classes and c != data.target]


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Every module of ``model`` in eval mode inside the block; each module's own mode restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def original_features(model: nn.Module, x_o: Tensor, bf16: bool = False, batch_size: int = 256) -> Tensor:
    """The features model.features(x_o): ``(N, 3, S, S)`` normalised originals -> ``(N, D) float32``, detached.

    Eval mode (BatchNorm reads its running statistics and leaves them unchanged; modes restored after),
    no gradients, no random numbers; bf16 autocast when ``bf16``; in chunks of ``batch_size`` images.
    """
    with evaluating(model), torch.no_grad(), torch.autocast(x_o.device.type, dtype=torch.bfloat16, enabled=bf16):
        return torch.cat([model.features(chunk).float() for chunk in x_o.split(batch_size)])


class OnlineClassifier(nn.Module):
    """A linear read-out of h: BatchNorm1d(D, affine=False) then Linear(D, C), zero-initialised (no RNG drawn).

    ``step(h, y)`` -> the accuracy of the classifier BEFORE it learns from this batch, a () tensor.
    """

    def __init__(self, dim: int, n_classes: int, lr: float = 1e-3):
        super().__init__()
        self.norm, self.linear = nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, n_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.optimizer = torch.optim.Adam(self.linear.parameters(), lr=lr)

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(self.norm(h))

    def accuracy(self, h: Tensor, y: Tensor) -> Tensor:
        """Top-1 on ``h (N, D)``, ``y (N,) int64``, BatchNorm on its running statistics: a () tensor."""
        self.eval()
        with torch.no_grad():
            accuracy = (self(h.detach().float()).argmax(1) == y).float().mean()
        self.train()
        return accuracy

    def learn(self, h: Tensor, y: Tensor) -> None:
        """One Adam step of the cross-entropy on ``h (N, D)`` (detached here) and ``y (N,) int64``."""
        with torch.enable_grad():
            loss = F.cross_entropy(self(h.detach().float()), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

    def step(self, h: Tensor, y: Tensor) -> Tensor:
        """The accuracy on ``(h, y)`` BEFORE the classifier learns from it, then one update on it."""
        accuracy = self.accuracy(h, y)
        self.learn(h, y)
        return accuracy


class OnlineMonitor:
    """A Trainer callback: online linear accuracy per label column, and kNN accuracy at each epoch end.

    columns: label columns to read (default ``default_columns``: e.g. "shape" and "colour").
    rows: images of each step's batch (the first of this process's) whose originals are measured, then
    remembered; memory: how many of the latest remembered (h, image) pairs the classifiers learn from,
    learn_rows of them drawn at random (the monitor's own generator) for one Adam step of size lr per step.
    bank / test: images of the kNN's fixed bank (training images) and query set (test images; ``test_set``
    or the config's test split), 0 for no kNN; k: neighbours (at most the bank's size); seed: which images
    the subsets hold, and the memory's draws.
    Records: "online_<col>_acc" (each log line), "knn_<col>_acc" (epoch ends), "<col>_chance" (the
    majority-class rate of the training images, each log line).
    """

    def __init__(self, columns: Optional[Sequence[str]] = None, lr: float = 2e-2, rows: int = 8,
                 memory: int = 1024, learn_rows: int = 256, bank: int = 600, test: int = 300, k: int = 20,
                 test_set: Optional[ImageDataset] = None, seed: int = 0):
        self.columns = list(columns) if columns is not None else None
        self.rows, self.memory, self.learn_rows = rows, memory, learn_rows
        self.lr, self.n_bank, self.n_test, self.k, self.test_set, self.seed = lr, bank, test, k, test_set, seed
        self.heads: dict[str, OnlineClassifier] = {}
        self.knn_seconds: list[float] = []  # the wall time of each epoch-end kNN (benchmarks)

    def attach(self, trainer) -> None:
        if trainer.streaming:
            raise ValueError("OnlineMonitor needs the dataset in memory (its labels and the kNN bank): "
                             "train with stream=False, or without the monitor")
        if type(trainer.objective).features is Objective.features:
            raise ValueError(f"OnlineMonitor: objective {trainer.cfg.objective!r} does not expose h "
                             f"(Objective.features); the monitor reads the self-supervised objectives")
        data = trainer.data
        self.columns = self.columns or default_columns(data)
        for column in self.columns:
            if column not in data.labels or data.labels[column].dtype != torch.int64:
                raise ValueError(f"OnlineMonitor: {column!r} is not a class column of the dataset {list(data.labels)}")
        self.labels = {c: data.labels[c] for c in self.columns}
        self.heads = {}  # a restart: fresh classifiers and memory at every attach (resume included)
        self.memory_h, self.memory_rows, self.remembered = None, None, 0
        self.generator = torch.Generator(trainer.device).manual_seed(self.seed)  # its own: the run's RNG untouched
        self.bank = shuffled_subset(data.subset(slice(0, trainer.n_images)), self.n_bank, self.seed)
        self.chance = {c: float(torch.bincount(y[: trainer.n_images]).max()) / trainer.n_images
                       for c, y in self.labels.items()}
        if self.n_bank and self.n_test:
            test = self.test_set
            if test is None:
                test = load_dataset(trainer.cfg.dataset, "test", trainer.cfg.data_root)
            self.test = shuffled_subset(test, self.n_test, self.seed).to(data.images.device)
        trainer.add_callback("on_step", self.on_step)
        trainer.add_callback("on_record", self.on_record)

    def _head(self, column: str, h: Tensor) -> OnlineClassifier:
        if column not in self.heads:
            classes = self.labels[column]
            n_classes = len(self.bank.classes.get(column, [])) or int(classes.max()) + 1
            self.heads[column] = OnlineClassifier(h.shape[1], n_classes, self.lr).to(h.device)
        return self.heads[column]

    def on_step(self, trainer, event: dict) -> None:
        """Measure, then train, each classifier on h of the originals of the batch's first ``rows`` images."""
        rows, h = event["indices"][: self.rows], event["features"]
        if h is not None:  # the step's forward made h of x_o (EquiMod): its rows, no extra forward
            h = h[: self.rows]
        else:
            x_o = event["batch"].x_o
            x_o = x_o[: self.rows] if x_o is not None else trainer.augmenter.original(trainer.data.images[rows])
            h = original_features(trainer.model, x_o, trainer.bf16)
        for column in self.columns:  # measured before any update from these images
            event["metrics"][f"online_{column}_acc"] = self._head(column, h).accuracy(h, self.labels[column][rows])
        memory_h, memory_rows = self._remember(h, rows)
        pick = torch.randint(0, memory_h.shape[0], (self.learn_rows,), generator=self.generator, device=h.device)
        for column in self.columns:
            self.heads[column].learn(memory_h[pick], self.labels[column][memory_rows[pick]])

    def _remember(self, h: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Adds (h, rows) to the ring of the latest ``memory`` pairs; returns the filled part ``(M, D), (M,)``."""
        if self.memory_h is None:
            self.memory_h = h.new_empty(self.memory, h.shape[1], dtype=torch.float32)
            self.memory_rows = rows.new_empty(self.memory)
        at = (self.remembered + torch.arange(h.shape[0], device=h.device)) % self.memory
        self.memory_h[at], self.memory_rows[at] = h.float(), rows
        self.remembered += h.shape[0]
        filled = min(self.remembered, self.memory)
        return self.memory_h[:filled], self.memory_rows[:filled]

    def on_record(self, trainer, record: dict) -> None:
        """The chance levels; at an epoch end (rank 0), the kNN and held-out online accuracies."""
        record.update({f"{c}_chance": p for c, p in self.chance.items()})
        if trainer.is_main and trainer.step % trainer.steps_per_epoch == 0 and self.n_bank and self.n_test:
            record.update(self.epoch_end(trainer.model, trainer.augmenter, trainer.bf16))

    def epoch_end(self, model: nn.Module, aug, bf16: bool = False) -> dict[str, float]:
        """"knn_<col>_acc" and "heldout_<col>_acc" on the fixed test images, from one pass of h over them.

        kNN: weighted k-NN per column, bank -> test, on h of the originals (``original_features``).
        heldout: the online classifier of each column as it stands, on the same test images (its
        accuracy on images it never learns from, less noisy than the per-step line).
        aug: what makes x_o (``original``): the run's AugmentationConfig or its augmenter.
        """
        tic = time.perf_counter()
        bank_h, test_h = (torch.cat([original_features(model, aug.original(part), bf16) for part in images.split(256)])
                          for images in (self.bank.images, self.test.images))
        record = {f"knn_{c}_acc": knn_accuracy(bank_h, self.bank.labels[c], test_h, self.test.labels[c], k=self.k)
                  for c in self.columns}
        for column, head in self.heads.items():
            record[f"heldout_{column}_acc"] = float(head.accuracy(test_h, self.test.labels[column].to(test_h.device)))
        self.knn_seconds.append(time.perf_counter() - tic)
        return record

    def knn(self, model: nn.Module, aug, bf16: bool = False) -> dict[str, float]:
        """Weighted k-NN accuracy per column, bank -> test, on h of the originals (``epoch_end``'s kNN part)."""
        return {key[len("knn_"): -len("_acc")]: value for key, value in self.epoch_end(model, aug, bf16).items()
                if key.startswith("knn_")}
