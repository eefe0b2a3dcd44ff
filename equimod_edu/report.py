"""Reports: every metric of a frozen model in one dict, as markdown, figures and files.

    report = evaluate_run("runs/equimod", fast=True)        # the run's checkpoint and dataset
    report = evaluate_random_init(cfg, fast=True)            # the same architecture, untrained
    print(report_markdown(report))
    headline(report)                                         # the flat metrics compare tabulates
    check_writable("runs/equimod/eval")                      # before the work: can the files be written?
    write_report(report, "runs/equimod/eval")                # report.json, report.md, figures (atomically)

Sizes (`EvalSizes`): FULL for a GPU, FAST (the CPU protocol of compare, the demo and the shipped
reports), QUICK (the demo's one-minute smoke run). The metrics themselves live in probes.py
and equivariance.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from . import __version__
from .augment import AugmentationConfig
from .checkpoint import all_finite, load_model
from .data import load_dataset
from .dataset import ImageDataset, shuffled_subset
from .equivariance import PosthocPredictor, equivariance_metrics, fit_posthoc_predictor, predictor_sensitivity
from .figures import bar_figure
from .files import TEMP_PREFIX, atomic_write, os_error_reason
from .models import EquiModModel, model_device, resolve_device
from .probes import augmentation_probes, extract_features, knn_accuracy, label_probes, linear_eval_sgd


class NonFiniteModelError(ValueError):
    """The model's weights, or the features h it computes, hold NaN or inf: there is nothing to evaluate."""


class ReportError(OSError):
    """The report cannot be written where asked (the message names the folder or file and why)."""


# ============================================================================================
# Sizes
# ============================================================================================
@dataclass(frozen=True)
class EvalSizes:
    """How much data each part of a report uses (caps: a smaller dataset is used whole)."""

    n_train: int = 50_000          # train images for probes and kNN (their frozen h)
    n_test: int = 10_000           # test images for probes and kNN
    knn_k: int = 200
    equi_images: int = 256         # held-out images for the equivariance metrics
    gallery_size: int = 16         # views per image (the retrieval gallery: K views x images)
    sensitivity_views: int = 2     # views per image for the sensitivity
    posthoc_images: int = 4096     # train images to fit the post-hoc predictor
    posthoc_pairs: int = 2         # pairs of views per image cached for it
    posthoc_epochs: int = 30
    param_train: int = 4000        # images for the augmentation-parameter probes (one view each)
    param_test: int = 1000

FULL = EvalSizes()

#: The CPU protocol used by compare, the demo and the shipped reports: the label probes and kNN on
#: 8,000 training and 4,000 held-out test images (the standard probe), the equivariance metrics on
#: smaller samples. A smaller dataset is used whole.
FAST = EvalSizes(n_train=8000, n_test=4000, equi_images=64, gallery_size=8, posthoc_images=512,
                 posthoc_pairs=1, posthoc_epochs=10, param_train=1000, param_test=500)

#: The demo's one-minute smoke run (``equimod-edu demo --quick``): every part of the report, tiny.
QUICK = EvalSizes(n_train=512, n_test=256, equi_images=32, gallery_size=4, posthoc_images=256,
                  posthoc_pairs=1, posthoc_epochs=3, param_train=256, param_test=128)

# ============================================================================================
# Evaluating a model, a run, a random init
# ============================================================================================
def _splits(cfg, dataset, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """(train, test): the config's dataset splits, a given pair, or one dataset split 80 / 20."""
    if dataset is None:
        if cfg.data_root is not None and not Path(cfg.data_root).is_dir():  # a config read from a file: create nothing
            raise FileNotFoundError(f"the run's data_root {cfg.data_root} does not exist: put the dataset there, or "
                                    f"evaluate with dataset=... (a loaded ImageDataset pair)")
        return load_dataset(cfg.dataset, "train", cfg.data_root), load_dataset(cfg.dataset, "test", cfg.data_root)
    if isinstance(dataset, ImageDataset):
        shuffled = shuffled_subset(dataset, len(dataset), seed)
        cut = int(0.8 * len(dataset))
        return shuffled.subset(slice(0, cut)), shuffled.subset(slice(cut, None))
    train, test = dataset
    return train, test


def _class_columns(ds: ImageDataset) -> list[str]:
    """Class (int64) label columns, the target first."""
    return [ds.target] + [k for k, v in ds.labels.items() if v.dtype == torch.int64 and k != ds.target]

def evaluate_model(model: EquiModModel, cfg, train_set: ImageDataset, test_set: ImageDataset,
                   sizes: EvalSizes = FULL, posthoc: bool = True, sgd_epochs: Optional[int] = None,
                   seed: int = 0) -> dict:
    """Every metric of this module for one frozen model (see evaluate_run for the keys).

    cfg: the model's TrainConfig (its augmentation is the one the metrics sample from).
    """
    model.eval()
    if not all_finite(model.state_dict().values()):
        raise NonFiniteModelError("the model's weights are not finite (NaN or inf): restore its checkpoint from "
                                  "a copy, or retrain it")
    aug, timings, tic = cfg.augmentation(), {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tic
        timings[name] = round(time.perf_counter() - tic, 2)
        tic = time.perf_counter()

    train = shuffled_subset(train_set, sizes.n_train, seed)
    test = shuffled_subset(test_set, sizes.n_test, seed + 1)
    f_train, f_test = extract_features(model, train, aug), extract_features(model, test, aug)
    if not all_finite([f_train["h"], f_test["h"]]):
        raise NonFiniteModelError("the model's features h are not finite (NaN or inf), though its weights are: "
                                  "they overflow; retrain it (a lower lr)")
    lap("features")
    report: dict = {"target": train.target}
    report["labels"] = label_probes(f_train["h"], train.labels, f_test["h"], test.labels)
    lap("label_probes")
    report["knn"] = {name: knn_accuracy(f_train["h"], train.labels[name], f_test["h"], test.labels[name],
                                        k=sizes.knn_k) for name in _class_columns(train)}
    lap("knn")
    if sgd_epochs:
        report["linear_eval_sgd"] = linear_eval_sgd(model, train_set, test_set, aug, epochs=sgd_epochs, seed=seed)
        lap("linear_eval_sgd")

    equi_images = test.images[: sizes.equi_images]
    report["equivariance"] = report["sensitivity"] = None
    if model.cfg.equimod:  # the model's own module, in y
        report["equivariance"], report["sensitivity"] = _equivariance_section(model, equi_images, aug, None,
                                                                              sizes, seed)
        lap("equivariance")
    report["equivariance_posthoc"] = report["sensitivity_posthoc"] = None
    if posthoc:  # a predictor fitted on the frozen model, in standardised h: the same question for every model
        predictor = fit_posthoc_predictor(model, train.images[: sizes.posthoc_images], aug, sizes.posthoc_epochs,
                                          pairs=sizes.posthoc_pairs, seed=seed)
        report["equivariance_posthoc"], report["sensitivity_posthoc"] = _equivariance_section(
            model, equi_images, aug, predictor, sizes, seed)
        lap("equivariance_posthoc")
    report["augmentation_probes"] = augmentation_probes(model, train.images[: sizes.param_train],
                                                        test.images[: sizes.param_test], aug, seed=seed)
    lap("augmentation_probes")
    report["meta"] = {"base": cfg.base, "equimod": cfg.equimod, "backbone": cfg.backbone, "dataset": cfg.dataset,
                      "augment": cfg.augment, "n_train": len(train), "n_test": len(test),
                      "device": str(model_device(model)), "seed": seed, "sizes": dataclasses.asdict(sizes),
                      "version": __version__, "seconds": timings}
    return report

def _equivariance_section(model: EquiModModel, images: Tensor, aug: AugmentationConfig,
                          predictor: Optional[PosthocPredictor], sizes: EvalSizes, seed: int) -> tuple[dict, dict]:
    """(equivariance metrics, sensitivity) of the model's module (predictor None) or a post-hoc predictor."""
    metrics = equivariance_metrics(model, images, aug, predictor, sizes.gallery_size, seed)
    metrics["space"] = "y" if predictor is None else predictor.space
    if predictor is not None:
        metrics["fit_loss"] = predictor.history
    return metrics, predictor_sensitivity(model, images, aug, predictor, sizes.sensitivity_views, seed)

def evaluate_run(run_dir, dataset=None, fast: bool = False, sizes: Optional[EvalSizes] = None, posthoc: bool = True,
                 sgd_epochs: Optional[int] = None, device=None, seed: int = 0) -> dict:
    """The evaluation report of one training run (its checkpoint in run_dir).

    dataset: None (the run's dataset, train and test splits), a (train, test) pair of
    ImageDatasets, or one ImageDataset (split 80 / 20 after a seeded shuffle). fast: the FAST
    sizes (a CPU check), else FULL; `sizes` overrides both. `sgd_epochs`: also run the paper's
    SGD linear evaluation for that many epochs (90 in the paper; a GPU job).

    Keys: "labels" (linear probe on frozen h per label column: accuracy for class columns, with
    the target first, R^2 for continuous factors), "knn" (per class column), "equivariance" and
    "sensitivity" (the model's own module, in y; None without it), "equivariance_posthoc" and
    "sensitivity_posthoc" (a post-hoc predictor fitted on standardised h: the same question asked
    of every model, with or without the module), "augmentation_probes", "target", "meta".

    Why h for the post-hoc predictor: SimCLR's z is trained to be invariant, so its displacements
    are tiny and say little; h is the representation evaluated downstream, and the one EquiMod
    claims to improve. The trained module's numbers (in y) stay in "equivariance".
    """
    device = resolve_device(device)
    model, cfg = load_model(run_dir, map_location=device)
    model.to(device)
    if not all_finite(model.state_dict().values()):  # before the data is loaded
        raise NonFiniteModelError(f"{run_dir}: the model's weights are not finite (NaN or inf): restore its "
                                  f"checkpoint from a copy, or retrain it")
    train_set, test_set = _splits(cfg, dataset, seed)
    try:
        report = evaluate_model(model, cfg, train_set, test_set, sizes or (FAST if fast else FULL), posthoc,
                                sgd_epochs, seed)
    except NonFiniteModelError as error:
        raise NonFiniteModelError(f"{run_dir}: {error}") from None
    report["meta"].update(run_dir=str(run_dir), random_init=False, fast=fast)
    return report

def evaluate_random_init(train_config, dataset=None, fast: bool = False, sizes: Optional[EvalSizes] = None,
                         posthoc: bool = True, device=None, seed: int = 0) -> dict:
    """The same report for the random-init baseline: the run's architecture, untrained (seeded).

    BatchNorm layers keep their initial running statistics (eval mode), as in
    benchmarks/dataset_probe.py. Arguments as ``evaluate_run``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EquiModModel(train_config.model_config()).to(resolve_device(device)).eval()
    train_set, test_set = _splits(train_config, dataset, seed)
    report = evaluate_model(model, train_config, train_set, test_set, sizes or (FAST if fast else FULL), posthoc,
                            None, seed)
    report["meta"].update(run_dir=None, random_init=True, fast=fast)
    return report


def _get(report: Optional[dict], *keys, default=None):
    for key in keys:
        if not isinstance(report, dict) or report.get(key) is None:
            return default
        report = report[key]
    return report


#: The augmentation probes' columns averaged into the headline's crop_r2 and colour_r2.
CROP_COLUMNS = ("crop_top", "crop_left", "crop_height", "crop_width")
COLOUR_COLUMNS = ("brightness", "contrast", "saturation", "hue")


def _mean_of(probes: dict, names: Sequence[str]) -> Optional[float]:
    """The mean R^2 of the named augmentation probes; None when one of them was not measured."""
    values = [_get(probes, name, "value") for name in names]
    return None if any(v is None for v in values) else sum(values) / len(values)


def headline(report: dict) -> dict:
    """The flat headline metrics of one evaluation report (evaluate_run's dict), described in compare.METRICS."""
    target = report["target"]
    own = report.get("equivariance")
    posthoc = report.get("equivariance_posthoc")
    scored = own if own is not None else posthoc
    probes = report.get("augmentation_probes") or {}
    r2 = [p["value"] for p in probes.values() if p and p["metric"] == "r2"]
    return {
        "shape_acc": _get(report, "labels", target, "value"),
        "colour_acc": _get(report, "labels", "colour", "value"),
        "knn_acc": _get(report, "knn", target),
        "colour_knn": _get(report, "knn", "colour"),
        "equivariance_gain": _get(scored, "gain"),
        "mrr": _get(scored, "retrieval", "mrr"),
        "hit1": _get(scored, "retrieval", "hit@1"),
        "posthoc_gain": _get(posthoc, "gain"),
        "posthoc_mrr": _get(posthoc, "retrieval", "mrr"),
        "param_r2": sum(r2) / len(r2) if r2 else None,
        "crop_r2": _mean_of(probes, CROP_COLUMNS),
        "colour_r2": _mean_of(probes, COLOUR_COLUMNS),
        "flip_acc": _get(probes, "flip", "value"),
        "hue_r2": _get(probes, "hue", "value"),
        "hue_sensitivity": _get(report, "sensitivity", "hue"),
    }


# ============================================================================================
# Writing a report
# ============================================================================================
def jsonable(value):
    """Plain JSON values: NaN and infinities become null, tensors and numpy values lists / numbers."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Tensor):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value

def _fmt(value, percent: bool = False, digits: int = 3) -> str:
    """A table cell: '-' for a missing value, else a percentage or a rounded number."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{100 * value:.1f}" if percent else f"{value:.{digits}f}"

def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])

def _model_name(report: dict) -> str:
    meta = report.get("meta", {})
    name = f"{meta.get('base', '?')}{'+equimod' if meta.get('equimod') else ''} ({meta.get('backbone', '?')})"
    return name + (", random init" if meta.get("random_init") else "")

def _equivariance_rows(report: dict) -> list[list[str]]:
    rows = []
    for key, label in (("equivariance", "module (trained)"), ("equivariance_posthoc", "post-hoc")):
        e = report.get(key)
        if not e:
            continue
        r, w = e["retrieval"], e["retrieval_within_image"]
        rows.append([label, e.get("space", "?"), _fmt(e["cos_invariant"]), _fmt(e["cos_pred"]), _fmt(e["gain"]),
                     _fmt(e["relative_gain"]), _fmt(r["mrr"]), _fmt(r["hit@1"], True), _fmt(r["hit@5"], True),
                     _fmt(r["chance_hit@1"], True), _fmt(w["hit@1"], True), _fmt(w["chance_hit@1"], True)])
    return rows

def report_markdown(report: dict) -> str:
    """The report as markdown tables (percentages for accuracies and hit rates)."""
    meta = report.get("meta", {})
    parts = [f"# Evaluation: {_model_name(report)}",
             f"run: `{meta.get('run_dir')}` | dataset: {meta.get('dataset')} ({meta.get('n_train')} train / "
             f"{meta.get('n_test')} test images) | fast: {meta.get('fast')} | equimod_edu {meta.get('version')}"]
    rows = [[name, r["metric"], _fmt(r["value"], r["metric"] == "accuracy"),
             _fmt(r.get("top5"), True), _fmt(report.get("knn", {}).get(name), True),
             _fmt(r["chance"], r["metric"] == "accuracy")] for name, r in report.get("labels", {}).items()]
    parts += ["## What the frozen features know (linear probe on h; accuracy %, or R^2)",
              _table(["label", "metric", "linear probe", "top-5", "kNN", "chance"], rows)]
    if report.get("linear_eval_sgd"):
        s = report["linear_eval_sgd"]
        parts.append(f"SGD linear evaluation (paper protocol): top-1 {_fmt(s['top1'], True)} %")
    rows = _equivariance_rows(report)
    if rows:
        parts += ["## Equivariance: predicting the embedding of a fresh view",
                  "gain = cos(y, y_hat) - cos(y, y_o); relative gain = gain / (1 - cos(y, y_o)); "
                  "retrieval: the prediction must find its view among all views (K per image) of all images, "
                  "or among the K views of its own image (within).",
                  _table(["predictor", "space", "cos(y,y_o)", "cos(y,y_hat)", "gain", "rel. gain", "MRR",
                          "Hit@1 %", "Hit@5 %", "chance Hit@1 %", "within Hit@1 %", "within chance %"], rows)]
        parts += ["## One augmentation at a time (gain | within-image Hit@1 %)", _per_augmentation_table(report)]
    sens = {k: report.get(k) for k in ("sensitivity", "sensitivity_posthoc") if report.get(k)}
    if sens:
        groups = list(next(iter(sens.values())))
        rows = [[g] + [_fmt(s.get(g), digits=4) for s in sens.values()] for g in groups]
        parts += ["## Predictor sensitivity (drop of mean cos(y, y_hat) when a group of t is shuffled)",
                  _table(["parameter group"] + [k.replace("sensitivity", "drop").replace("_", " ") for k in sens],
                         rows)]
    rows = [[name, r["metric"] if r else "-", _fmt(r and r["value"], bool(r) and r["metric"] == "accuracy"),
             _fmt(r and r["chance"], bool(r) and r["metric"] == "accuracy")]
            for name, r in report.get("augmentation_probes", {}).items()]
    parts += ["## Augmentation parameters readable from [h_o ; h_view] (linear probe)",
              _table(["parameter", "metric", "value", "chance"], rows)]
    return "\n\n".join(parts) + "\n"

def _per_augmentation_table(report: dict) -> str:
    sources = [(k, label) for k, label in (("equivariance", "module"), ("equivariance_posthoc", "post-hoc"))
               if report.get(k)]
    groups = list(report[sources[0][0]].get("per_augmentation", {}))
    header = ["augmentation"] + [f"{label} {what}" for _, label in sources for what in ("gain", "within Hit@1")]
    rows = []
    for g in groups:
        row = [g]
        for key, _ in sources:
            e = report[key]["per_augmentation"][g]
            row += [_fmt(e["gain"]), _fmt(e["retrieval_within_image"]["hit@1"], True)]
        chance = report[sources[0][0]]["per_augmentation"][g]["retrieval_within_image"]["chance_hit@1"]
        rows.append(row + [_fmt(chance, True)])
    return _table(header + ["within chance %"], rows)

def report_figures(report: dict) -> dict[str, object]:
    """Figures of a report: name -> matplotlib Figure (sensitivity, per-augmentation gain, probes)."""
    figures = {}
    sens = {label: report[k] for k, label in (("sensitivity", "module"), ("sensitivity_posthoc", "post-hoc"))
            if report.get(k)}
    if sens:
        figures["sensitivity"] = bar_figure(sens, "Predictor sensitivity: drop of cos(y, y_hat) when a group "
                                             "of t is shuffled", "drop")
    per = {label: {g: e["gain"] for g, e in report[k]["per_augmentation"].items()}
           for k, label in (("equivariance", "module"), ("equivariance_posthoc", "post-hoc"))
           if report.get(k) and report[k].get("per_augmentation")}
    if per:
        figures["per_augmentation"] = bar_figure(per, "Gain cos(y, y_hat) - cos(y, y_o), one augmentation "
                                                  "at a time", "gain")
    probes = {name: r["value"] for name, r in report.get("augmentation_probes", {}).items() if r}
    if probes:
        figures["augmentation_probes"] = bar_figure({_model_name(report): probes}, "Augmentation parameters "
                                                     "read from h (R^2 or accuracy)", "R^2 / accuracy")
    return figures

def check_writable(out_dir, hint: str = "") -> None:
    """Raise ReportError (one line: the folder, why, then `hint`) when no file can be created in out_dir.

    Call it before the work. Nothing is left behind: a probe file is created and removed in the
    deepest folder of the path that exists (out_dir itself, or the folder it would be made in).
    """
    out = Path(out_dir)
    existing = next((p for p in (out, *out.parents) if p.exists()), Path.cwd())
    hint = f"; {hint}" if hint else ""
    if not existing.is_dir():
        raise ReportError(f"cannot write the report into {out}: {existing} is a file, not a folder{hint}")
    try:
        fd, probe = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}probe.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ReportError(f"cannot write the report into {out}: {os_error_reason(error, existing / 'probe')}"
                          f"{hint}") from None


def write_report(report: dict, out_dir) -> dict[str, Path]:
    """Write report.json, report.md and one PNG per figure into out_dir; returns name -> path.

    Everything is rendered in memory first, then each file is written atomically (files.atomic_write):
    a failure (a full disk) leaves that file as it was, whole, and raises ReportError naming it.
    """
    out = Path(out_dir)
    files = {"json": ("report.json", json.dumps(jsonable(report), indent=2).encode()),
             "markdown": ("report.md", report_markdown(report).encode())}
    for name, fig in report_figures(report).items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120)
        files[name] = (f"{name}.png", buffer.getvalue())
    paths = {}
    for key, (file_name, data) in files.items():
        path = out / file_name
        try:
            atomic_write(path, lambda f, data=data: f.write(data))
        except OSError as error:
            raise ReportError(f"cannot write {path}: {os_error_reason(error, path)}; the file there (if any) is "
                              f"unchanged") from None
        paths[key] = path
    return paths
