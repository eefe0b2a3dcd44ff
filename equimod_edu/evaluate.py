"""Evaluation: what a frozen representation knows, and how equivariant it is.

    model, cfg = load_model("runs/equimod")                 # from equimod_edu.train
    aug = cfg.augmentation()
    train, test = synthetic("train"), synthetic("test")     # from equimod_edu.data
    f_train, f_test = extract_features(model, train, aug), extract_features(model, test, aug)
    linear_probe(f_train["h"], train.targets, f_test["h"], test.targets)   # {"top1", "top5"}
    knn_accuracy(f_train["h"], train.targets, f_test["h"], test.targets)   # weighted 200-NN
    equivariance_metrics(model, test.images[:256], aug)                    # gain, retrieval, per augmentation
    report = evaluate_run("runs/equimod", fast=True)                       # all of it, one dict
    write_report(report, "runs/equimod/eval")                              # report.json, report.md, figures

Sections, in the order of this file:

1. Frozen features of the originals x_o (h from the backbone, z, y).
2. Linear evaluation: a fast CPU probe (logistic regression on standardised h), and the paper's
   protocol (frozen backbone, 90 epochs of SGD on a linear layer, crop + flip), written for a GPU.
3. Weighted kNN on cosine similarity, the usual self-supervised benchmark.
4. Equivariance of a predictor u(y_o, t) on held-out images and fresh augmentations: the gain
   cos(y, y_hat) - cos(y, y_o) of docs/design.md, a relative gain, and *retrieval* (does the prediction
   find the true view among many views of the same image and of other images?), for the whole
   augmentation and for each augmentation alone.
5. Predictor sensitivity: how much the prediction degrades when one parameter group of t is
   shuffled across the batch (which parameters does u actually use?).
6. What information is kept: linear probes from frozen h to each augmentation parameter of a
   view, and to every label column of the dataset.
7. A post-hoc predictor, fitted on a frozen model, so that models without the module (SimCLR,
   BYOL) and with it are compared on the same question: how predictable are the displacements?
8. Reports: :func:`evaluate_run`, :func:`evaluate_random_init`, :func:`write_report`.

Conventions: accuracies, hit rates and MRR are fractions in [0, 1]; R^2 may be negative (worse
than predicting the mean). Every function puts the model in eval mode and runs without
gradients (except the heads it fits). Randomness comes from explicit seeds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import __version__
from .augment import AugmentationConfig, AugmentationParams, apply
from .data import ImageDataset, load_dataset
from .losses import equivariance_gain, equivariance_loss
from .models import EquiModModel, EquivariantPredictor, ParameterEncoder

__all__ = [
    "extract_features",
    "shuffled_subset",
    "linear_probe",
    "ridge_probe",
    "label_probes",
    "linear_eval_augmentation",
    "linear_eval_sgd",
    "knn_accuracy",
    "ViewEmbeddings",
    "sample_views",
    "sample_one_augmentation",
    "one_at_a_time_groups",
    "embed_views",
    "prediction_quality",
    "retrieval_metrics",
    "chance_of_ranking",
    "equivariance_scores",
    "equivariance_metrics",
    "sensitivity_from_embeddings",
    "predictor_sensitivity",
    "parameter_targets",
    "augmentation_probes",
    "PosthocPredictor",
    "fit_posthoc_predictor",
    "EvalSizes",
    "FULL",
    "FAST",
    "evaluate_model",
    "evaluate_run",
    "evaluate_random_init",
    "report_markdown",
    "report_figures",
    "write_report",
    "centre_crop_params",
    "model_device",
]

#: A predictor: (y_o (N, D), t (N, P)) -> y_hat (N, D). EquiMod's is ``model.predict``.
Predictor = Callable[[Tensor, Tensor], Tensor]
Images = Union[ImageDataset, Tensor]


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def _images(data: Images) -> Tensor:
    """(N, 3, H, W) uint8 images of an ImageDataset, or the tensor itself."""
    return data.images if isinstance(data, ImageDataset) else data


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _cos(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity in float32: (N, D), (N, D) -> (N,)."""
    return F.cosine_similarity(a.float(), b.float(), dim=1)


def _embedding(model: EquiModModel, space: str) -> Callable[[Tensor], Tensor]:
    """x (N, 3, S, S) normalised -> (N, D) embedding in `space`: "h" (backbone), "z" (invariance
    projection) or "y" (EquiMod's equivariant projection g')."""
    if space == "h":
        return model.features
    if space == "z":
        return lambda x: model.projector(model.features(x))
    if space == "y":
        if not model.cfg.equimod:
            raise ValueError("space='y' needs the equivariance module (cfg.equimod is False); "
                             "use space='h' or 'z' with a post-hoc predictor")
        if model.equi_projector is None:  # g' switched off: y = h
            return model.features
        return lambda x: model.equi_projector(model.features(x))
    raise ValueError(f"space must be 'h', 'z' or 'y', got {space!r}")


@torch.no_grad()
def _batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int, device) -> Tensor:
    """fn over row chunks of x (moved to device), concatenated: (N, ...) -> (N, ...)."""
    return torch.cat([fn(chunk.to(device)) for chunk in x.split(batch_size)])


# ============================================================================================
# 1. Frozen features
# ============================================================================================
@torch.no_grad()
def extract_features(model: EquiModModel, dataset: Images, aug: AugmentationConfig, batch_size: int = 512,
                     device=None) -> dict[str, Optional[Tensor]]:
    """Frozen embeddings of the originals x_o = aug.original(images) (resized, normalised).

    dataset: an ImageDataset or images (N, 3, H, W) uint8. The model is put in eval mode (and
    moved to `device` if one is given). Returns float32 tensors on the CPU:
    {"h": (N, feature_dim) backbone features, "z": (N, z_dim) invariance projection,
    "y": (N, y_dim) equivariant projection, or None without the module}.
    """
    model.eval()
    if device is not None:
        model.to(device)
    device = model_device(model)
    out: dict[str, list] = {"h": [], "z": [], "y": []}
    for chunk in _images(dataset).split(batch_size):
        for name, value in zip(("h", "z", "y"), model.embed(aug.original(chunk.to(device)))):
            if value is not None:
                out[name].append(value.float().cpu())
    return {name: torch.cat(values) if values else None for name, values in out.items()}


# ============================================================================================
# 2. Linear evaluation
# ============================================================================================
def _standardised(train_x, test_x) -> tuple[np.ndarray, np.ndarray]:
    """Both sets standardised with the mean and std of the train set (scikit-learn's StandardScaler)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(_numpy(train_x))
    return scaler.transform(_numpy(train_x)), scaler.transform(_numpy(test_x))


def _top_k(scores: np.ndarray, classes: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 (and top-5 when there are more than 5 classes) accuracy of scores (N, C)."""
    ranked = classes[np.argsort(-scores, axis=1)]  # (N, C) class labels, best first
    out = {"top1": float(np.mean(ranked[:, 0] == labels))}
    if len(classes) > 5:
        out["top5"] = float(np.mean((ranked[:, :5] == labels[:, None]).any(axis=1)))
    return out


def linear_probe(train_feats, train_labels, test_feats, test_labels, C: float = 1.0, max_iter: int = 1000,
                 seed: int = 0) -> dict[str, float]:
    """Fast linear evaluation on the CPU: logistic regression on standardised frozen features.

    train_feats (N, D), train_labels (N,) int; test_feats (M, D), test_labels (M,) int (torch or
    numpy). Multinomial logistic regression (L-BFGS, L2 penalty C, fixed seed) on features
    standardised with the train set's statistics. Returns {"top1"} and, with more than 5
    classes, {"top5"}: fractions of the test set.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    a, b = _standardised(train_feats, test_feats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed).fit(a, _numpy(train_labels))
    return _top_k(clf.predict_proba(b), clf.classes_, _numpy(test_labels))


def ridge_probe(train_feats, train_targets, test_feats, test_targets,
                alphas: Sequence[float] = tuple(np.logspace(-1, 5, 7))) -> float:
    """R^2 on the test set of a ridge regression from standardised features to continuous targets.

    train_feats (N, D), train_targets (N,) or (N, T); test likewise. The penalty is chosen among
    `alphas` by efficient leave-one-out on the train set (RidgeCV; the alphas of
    benchmarks/dataset_probe.py). With T targets, the R^2 is averaged over them. 1 = perfect,
    0 = no better than the mean, < 0 worse.
    """
    from sklearn.linear_model import RidgeCV

    a, b = _standardised(train_feats, test_feats)
    return float(RidgeCV(alphas=list(alphas)).fit(a, _numpy(train_targets)).score(b, _numpy(test_targets)))


#: Label columns that are angles (period in the column's unit): probed as (cos, sin).
CIRCULAR_LABELS = {"hue": 360.0}


def _circular(values: Tensor, period: float) -> Tensor:
    """(N,) angles -> (N, 2) (cos, sin): +359 and +1 degrees are neighbours."""
    angle = 2 * math.pi * values.float() / period
    return torch.stack([angle.cos(), angle.sin()], dim=1)


def label_probes(train_feats, train_labels: dict[str, Tensor], test_feats, test_labels: dict[str, Tensor],
                 columns: Optional[Sequence[str]] = None) -> dict[str, dict]:
    """A linear probe per label column of a dataset (e.g. shape, colour, x, y, scale, rotation).

    Class columns (int64): :func:`linear_probe`, reported as {"metric": "accuracy", "value": top-1,
    "top5" (more than 5 classes), "chance": 1 / number of classes}. Continuous columns (float32):
    :func:`ridge_probe`, {"metric": "r2", "value", "chance": 0.0}; angle columns named in
    CIRCULAR_LABELS are regressed as (cos, sin). `columns`: which ones (default: all).
    """
    out = {}
    for name in columns or list(train_labels):
        y_train, y_test = train_labels[name], test_labels[name]
        if y_train.dtype == torch.int64:
            n_classes = int(max(int(y_train.max()), int(y_test.max()))) + 1
            result = linear_probe(train_feats, y_train, test_feats, y_test)
            out[name] = {"metric": "accuracy", "value": result["top1"], "chance": 1.0 / n_classes,
                         **({"top5": result["top5"]} if "top5" in result else {})}
        else:
            if name in CIRCULAR_LABELS:
                y_train, y_test = (_circular(y, CIRCULAR_LABELS[name]) for y in (y_train, y_test))
            out[name] = {"metric": "r2", "value": ridge_probe(train_feats, y_train, test_feats, y_test),
                         "chance": 0.0}
    return out


def linear_eval_augmentation(aug: AugmentationConfig) -> AugmentationConfig:
    """Train-time augmentation of the linear evaluation: RandomResizedCrop(scale 0.08-1) + flip only.

    Same output size, interpolation and normalisation as `aug`; no colour jitter, grayscale,
    blur or solarize (docs/design.md, linear evaluation).
    """
    return aug.replace(crop_scale=(0.08, 1.0), flip_p=0.5, jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0)


def centre_crop_params(n: int, fraction: float, device=None) -> AugmentationParams:
    """Parameters that resize then centre crop, as one box: the central `fraction` of the image.

    CIFAR's test transform "resize to 36, centre crop 32" keeps the central 32/36 = 8/9 of the
    image and resamples it to 32 x 32: exactly this box (the pixel centres map identically).
    """
    params = AugmentationParams.identity(n, device)
    margin = (1 - fraction) / 2
    params.crop[:] = torch.tensor([margin, margin, fraction, fraction], device=device)
    return params


def linear_eval_sgd(model: EquiModModel, train_set: ImageDataset, test_set: ImageDataset, aug: AugmentationConfig,
                    label: Optional[str] = None, epochs: int = 90, lr: float = 0.2, batch_size: int = 256,
                    momentum: float = 0.9, weight_decay: float = 0.0, test_crop: float = 32 / 36,
                    device=None, seed: int = 0) -> dict[str, float]:
    """The paper's linear evaluation: a linear layer on the frozen backbone, trained with SGD.

    Protocol (docs/design.md): frozen f (eval mode: BatchNorm uses its running statistics), `epochs`
    (90) of SGD with Nesterov momentum 0.9, lr 0.2, batch 256, cosine schedule per step to 0;
    train-time random crop (scale 0.08-1) + flip from our augmentation engine, features recomputed
    for every batch; test: resize to S / test_crop then centre crop S (CIFAR: 36 -> 32).
    Written for a GPU (bf16 autocast for the backbone there); a 1-epoch call on tiny data runs on
    a CPU.

    Returns {"top1", "top5" (more than 5 classes), "train_loss" (mean over the last epoch)}.
    """
    model.eval()
    if device is not None:
        model.to(device)
    device = model_device(model)
    label = label or train_set.target
    y_train = train_set.labels[label].to(device)
    n_classes = len(train_set.classes.get(label, [])) or int(y_train.max()) + 1
    head = nn.Linear(model.feature_dim, n_classes).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, nesterov=True,
                                weight_decay=weight_decay)
    steps = epochs * math.ceil(len(train_set) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    train_aug = linear_eval_augmentation(aug)
    generator = torch.Generator(device=device).manual_seed(seed)
    images = train_set.images.to(device)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def features(x: Tensor) -> Tensor:
        with torch.no_grad(), torch.autocast(**autocast):
            return model.features(x).float()

    for _ in range(epochs):
        losses = []
        for index in torch.randperm(len(images), generator=generator, device=device).split(batch_size):
            x = images[index]
            params = train_aug.sample(len(x), tuple(x.shape[-2:]), generator, device)
            loss = F.cross_entropy(head(features(apply(x, params, train_aug))), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.detach())
    test_aug = train_aug.replace(interpolation="bilinear")  # torchvision's Resize default

    def test_logits(x: Tensor) -> Tensor:
        return head(features(apply(x, centre_crop_params(len(x), test_crop, device), test_aug)))

    with torch.no_grad():
        logits = _batched(test_logits, test_set.images, batch_size, device)
    result = _top_k(_numpy(logits.float()), np.arange(n_classes), _numpy(test_set.labels[label]))
    result["train_loss"] = float(torch.stack(losses).mean()) if losses else float("nan")
    return result


# ============================================================================================
# 3. kNN
# ============================================================================================
@torch.no_grad()
def knn_accuracy(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, test_labels: Tensor,
                 k: int = 200, temperature: float = 0.1, batch_size: int = 1024) -> float:
    """Weighted k-nearest-neighbour accuracy on cosine similarity (Wu et al. 2018, as in DINO).

    For each test point, its k most similar train points (cosine) vote for their class with
    weight exp(similarity / temperature); the class with the most weight wins. Features (N, D) /
    (M, D), labels (N,) / (M,) int; computed in batches of test rows on the features' device.
    Returns the top-1 accuracy (fraction of the M test points).
    """
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float().to(train.device), dim=1)
    train_labels, test_labels = train_labels.to(train.device), test_labels.to(train.device)
    n_classes = int(max(int(train_labels.max()), int(test_labels.max()))) + 1
    k = min(k, len(train))
    correct = 0
    for queries, labels in zip(test.split(batch_size), test_labels.split(batch_size)):
        similarity, neighbours = (queries @ train.T).topk(k, dim=1)  # (b, k)
        votes = torch.zeros(len(queries), n_classes, device=train.device)
        votes.scatter_add_(1, train_labels[neighbours], (similarity / temperature).exp())
        correct += int((votes.argmax(dim=1) == labels).sum())
    return correct / len(test)


# ============================================================================================
# 4. Equivariance of a predictor: gain, retrieval, per augmentation
# ============================================================================================
@dataclass
class ViewEmbeddings:
    """Embeddings of B images and K augmented views of each (the rows of the equivariance metrics).

    y_o:   (B, D) embedding of each original;
    y:     (B*K, D) embedding of each view, row i*K + k = view k of image i;
    t:     (B*K, P) encoded parameters of each view (the predictor's input);
    image: (B*K,) long, the image of each row (i).
    """

    y_o: Tensor
    y: Tensor
    t: Tensor
    image: Tensor

    @property
    def y_o_rows(self) -> Tensor:
        """(B*K, D): the original's embedding repeated for each of its views."""
        return self.y_o[self.image]


def _select_rows(mask: Tensor, a: AugmentationParams, b: AugmentationParams) -> AugmentationParams:
    """Row i from a where mask[i] (N,) bool, else from b."""
    fields = {}
    for f in dataclasses.fields(AugmentationParams):
        x, y = getattr(a, f.name), getattr(b, f.name)
        fields[f.name] = torch.where(mask.view(-1, *[1] * (x.dim() - 1)), x, y)
    return AugmentationParams(**fields)


def sample_views(aug: AugmentationConfig, n_images: int, views: int, image_size: tuple[int, int],
                 generator: torch.Generator, device=None) -> AugmentationParams:
    """Parameters of `views` augmented views of each image: n_images * views rows (row i*views + k).

    Drawn from the config's own distribution; even k use its view-1 settings and odd k its view-2
    settings (they differ only for BYOL's asymmetric blur and solarize).
    """
    n = n_images * views
    first = aug.sample(n, image_size, generator, device, view=0)
    second = aug.sample(n, image_size, generator, device, view=1)
    odd = torch.arange(n, device=first.device) % 2 == 1
    return _select_rows(odd, second, first)


#: The fields of AugmentationParams that each augmentation of the breakdown changes.
ONE_AUGMENTATION_FIELDS = {
    "crop": ("crop",), "flip": ("flip",),
    "brightness": ("jitter", "brightness"), "contrast": ("jitter", "contrast"),
    "saturation": ("jitter", "saturation"), "hue": ("jitter", "hue"),
    "grayscale": ("grayscale",), "blur": ("blur", "sigma"), "solarize": ("solarize",),
}


def one_at_a_time_groups(aug: AugmentationConfig) -> list[str]:
    """The augmentations the config uses (the ones the per-augmentation breakdown varies alone)."""
    jitter = aug.jitter_p > 0
    used = {"crop": True, "flip": aug.flip_p > 0, "brightness": jitter and aug.brightness > 0,
            "contrast": jitter and aug.contrast > 0, "saturation": jitter and aug.saturation > 0,
            "hue": jitter and aug.hue > 0, "grayscale": aug.gray_p > 0, "blur": aug.has_blur,
            "solarize": aug.has_solarize}
    return [name for name, on in used.items() if on]


def sample_one_augmentation(aug: AugmentationConfig, group: str, n: int, image_size: tuple[int, int],
                            generator: torch.Generator, device=None) -> AugmentationParams:
    """n parameter rows where only augmentation `group` acts; everything else is the identity.

    Starts from AugmentationParams.identity(n) and copies the group's fields from a sample of the
    config in which that augmentation always acts when it has a strength (colour jitter, blur:
    probability 1, one factor at a time, jitter order left at 0 1 2 3) and is a fair coin when it
    is on/off (flip, grayscale, solarize: probability 0.5, so the K views of an image come in two
    kinds). Crop boxes keep the config's scale and ratio.
    """
    if group not in ONE_AUGMENTATION_FIELDS:
        raise ValueError(f"unknown augmentation {group!r}; choose one of {list(ONE_AUGMENTATION_FIELDS)}")
    forced = aug.replace(jitter_p=1.0, blur_p=1.0, flip_p=0.5, gray_p=0.5, solarize_p=0.5)
    sampled = forced.sample(n, image_size, generator, device)
    params = AugmentationParams.identity(n, sampled.device)
    for name in ONE_AUGMENTATION_FIELDS[group]:
        setattr(params, name, getattr(sampled, name))
    return params


@torch.no_grad()
def embed_views(images: Tensor, aug: AugmentationConfig, params: AugmentationParams, views: int,
                embed: Callable[[Tensor], Tensor], batch_size: int = 512,
                y_o: Optional[Tensor] = None) -> ViewEmbeddings:
    """Embed B originals and their B*K views (params row i*K + k is view k of image i).

    images (B, 3, H, W) uint8; embed: normalised images (n, 3, S, S) -> (n, D), e.g.
    ``lambda x: model.embed(x)[2]``; y_o (B, D): the originals' embeddings if already computed.
    t is ``aug.encode(params)``: the encoding the model was trained with. Returns a
    :class:`ViewEmbeddings` on the device of params.
    """
    device = params.device
    images = images.to(device)
    if y_o is None:
        y_o = _batched(lambda x: embed(aug.original(x)).float(), images, batch_size, device)
    image = torch.arange(len(images), device=device).repeat_interleave(views)
    y = _embed_augmented(images, image, params, aug, embed, batch_size)
    return ViewEmbeddings(y_o=y_o, y=y, t=aug.encode(params), image=image)


@torch.no_grad()
def _embed_augmented(images: Tensor, image: Tensor, params: AugmentationParams, aug: AugmentationConfig,
                     embed: Callable[[Tensor], Tensor], batch_size: int) -> Tensor:
    """(R, D) embeddings of R views: row r is images[image[r]] augmented with params[r]."""
    rows = torch.arange(len(image), device=image.device)
    return torch.cat([embed(apply(images[image[r]], params[r], aug)).float() for r in rows.split(batch_size)])


def prediction_quality(y: Tensor, y_hat: Tensor, y_o: Tensor) -> dict[str, float]:
    """How well y_hat predicts y, against the invariant guess y_o. Three (N, D) -> floats.

    - cos_pred = mean cos(y, y_hat); cos_invariant = mean cos(y, y_o);
    - gain = mean [cos(y, y_hat) - cos(y, y_o)] (losses.equivariance_gain; docs/design.md: "the
      quantity learners should see"); 0 for the invariant predictor y_hat = y_o;
    - relative_gain = gain / mean [1 - cos(y, y_o)] = 1 - mean(1 - cos(y, y_hat)) / mean(1 - cos(y, y_o)):
      the fraction of the cosine distance between original and view that the prediction removes.
      0 for y_hat = y_o, 1 for a perfect prediction, < 0 when worse than invariance; NaN when the
      views do not move at all (a perfectly invariant embedding: nothing to predict).
    """
    cos_pred, cos_invariant = _cos(y, y_hat), _cos(y, y_o)
    gain = equivariance_gain(y, y_hat, y_o)
    moved = float((1 - cos_invariant).mean())
    return {"cos_pred": float(cos_pred.mean()), "cos_invariant": float(cos_invariant.mean()),
            "gain": float(gain.mean()), "relative_gain": float(gain.mean()) / moved if moved > 0 else float("nan")}


def chance_of_ranking(n_gallery: int, n_positive: int, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Expected MRR and Hit@k of a random ranking of n_gallery items, n_positive of them correct.

    The first r items are all wrong with probability P(rank > r) = C(G - m, r) / C(G, r) =
    prod_{i < r} (G - m - i) / (G - i); Hit@k = 1 - P(rank > k); MRR = sum_r P(rank = r) / r.
    With one correct item: Hit@1 = 1 / G and MRR = (1 + 1/2 + ... + 1/G) / G.
    """
    G, m = n_gallery, n_positive
    if not 1 <= m <= G:
        raise ValueError(f"need 1 <= n_positive <= n_gallery, got {m} and {G}")
    i = torch.arange(G - m + 1, dtype=torch.float64)
    survive = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod((G - m - i) / (G - i), 0)])
    p_rank = survive[:-1] - survive[1:]                                   # r = 1 .. G - m + 1
    out = {"mrr": float((p_rank / torch.arange(1, G - m + 2, dtype=torch.float64)).sum())}
    for k in ks:
        out[f"hit@{k}"] = float(1 - survive[min(k, G - m + 1)])
    return out


def _rank_summary(rank: Tensor, n_gallery: Tensor, n_positive: Tensor, ks: Sequence[int]) -> dict[str, float]:
    """MRR and Hit@k of ranks (Q,) and their chance levels, averaged over the queries."""
    out = {"mrr": float((1.0 / rank.double()).mean())}
    out.update({f"hit@{k}": float((rank <= k).double().mean()) for k in ks})
    pairs, counts = torch.unique(torch.stack([n_gallery, n_positive], 1), dim=0, return_counts=True)
    chance = {key: 0.0 for key in out}
    for (g, m), count in zip(pairs.tolist(), counts.tolist()):
        for key, value in chance_of_ranking(g, m, ks).items():
            chance[key] += value * count / len(rank)
    out.update({f"chance_{key}": value for key, value in chance.items()})
    out["gallery"] = float(n_gallery.double().mean())
    return out


@torch.no_grad()
def retrieval_metrics(queries: Tensor, gallery: Tensor, image: Tensor, keys: Optional[Tensor] = None,
                      ks: Sequence[int] = (1, 5), batch_size: int = 1024) -> dict[str, dict]:
    """Can each prediction find its own view? Query row q must retrieve gallery row q.

    queries (Q, D): predictions y_hat; gallery (Q, D): the true view embeddings y, row q being the
    target of query q; image (Q,) long: the image of each row; keys (Q, P): the parameters of each
    row (rows of the same image with equal keys are the same view and all count as correct).
    Items are ranked by cosine similarity; the rank is 1 + the number of wrong items at least as
    similar as the best correct one (ties count against the query: a collapsed embedding, where
    everything is equally similar, gets the worst rank, never a perfect one).

    Returns {"retrieval": gallery = all Q views (K views of each of B images; chance ~1/(BK)),
    "retrieval_within_image": gallery = the K views of the query's own image only (chance ~1/K:
    predicting y_o, invariance, cannot beat it)}, each {"mrr", "hit@k"..., "chance_mrr",
    "chance_hit@k"..., "gallery"}.
    """
    if keys is None:
        keys = torch.arange(len(image), device=image.device)[:, None]
    view_id = torch.unique(torch.cat([image[:, None].to(keys.dtype), keys], 1), dim=0, return_inverse=True)[1]
    q = F.normalize(queries.float(), dim=1)
    g = F.normalize(gallery.float().to(q.device), dim=1)
    view_id, image = view_id.to(q.device), image.to(q.device)
    rank_all, rank_within, n_positive, n_same = [], [], [], []
    for rows in torch.arange(len(q), device=q.device).split(batch_size):
        similarity = q[rows] @ g.T                                          # (b, Q)
        positive = view_id[rows, None] == view_id[None, :]
        same_image = image[rows, None] == image[None, :]
        best = similarity.masked_fill(~positive, float("-inf")).max(dim=1).values
        beaten = (similarity >= best[:, None]) & ~positive                  # wrong items ranked first
        rank_all.append(1 + beaten.sum(1))
        rank_within.append(1 + (beaten & same_image).sum(1))
        n_positive.append(positive.sum(1))
        n_same.append(same_image.sum(1))
    n_positive, n_same = torch.cat(n_positive).cpu(), torch.cat(n_same).cpu()
    everything = torch.full_like(n_positive, len(q))
    return {"retrieval": _rank_summary(torch.cat(rank_all).cpu(), everything, n_positive, ks),
            "retrieval_within_image": _rank_summary(torch.cat(rank_within).cpu(), n_same, n_positive, ks)}


@torch.no_grad()
def equivariance_scores(emb: ViewEmbeddings, predictor: Predictor, ks: Sequence[int] = (1, 5)) -> dict:
    """Gain, relative gain and retrieval of `predictor` on precomputed view embeddings.

    The predictor is called once, on all B*K rows: predictor(emb.y_o_rows, emb.t) -> (B*K, D).
    Returns :func:`prediction_quality`'s keys plus :func:`retrieval_metrics`'s two sections.
    """
    y_o = emb.y_o_rows
    y_hat = predictor(y_o, emb.t).float()
    return {**prediction_quality(emb.y, y_hat, y_o), **retrieval_metrics(y_hat, emb.y, emb.image, emb.t, ks)}


def _resolve(model: EquiModModel, predictor: Optional[Predictor], space: str):
    """(embed, predict): the embedding the metric lives in and the predictor to score.

    A PosthocPredictor brings its own (standardised) space; otherwise `space` of the model, and
    the model's own module when predictor is None.
    """
    if isinstance(predictor, PosthocPredictor):
        return (lambda x: predictor.embed(model, x)), predictor.eval()
    if predictor is None:
        if not model.cfg.equimod:
            raise ValueError("this model has no equivariance module (a SimCLR / BYOL baseline): fit one with "
                             "fit_posthoc_predictor(model, images, aug) and pass predictor=...")
        predictor = model.predict
    return _embedding(model, space), predictor


def equivariance_metrics(model: EquiModModel, images: Images, aug: AugmentationConfig,
                         predictor: Optional[Predictor] = None, gallery_size: int = 16, seed: int = 0,
                         space: str = "y", per_augmentation: bool = True, batch_size: int = 512) -> dict:
    """How well a predictor anticipates the embedding of fresh augmented views of held-out images.

    For B images, `gallery_size` = K views each, drawn from `aug` (the training distribution):
    y_o = embed(x_o), y = embed(view), y_hat = predictor(y_o, t). predictor defaults to the model's
    own module (``model.predict``); a :class:`PosthocPredictor` (for SimCLR / BYOL) carries its own
    embedding space; any other callable (y_o, t) -> y_hat is scored in `space` ("y", "z", "h").

    Returns {"cos_pred", "cos_invariant", "gain", "relative_gain" (see prediction_quality),
    "retrieval", "retrieval_within_image" (see retrieval_metrics), "per_augmentation": {name: the
    same keys, with only that augmentation acting (sample_one_augmentation)}, "n_images", "views"}.
    """
    model.eval()
    embed, predict = _resolve(model, predictor, space)
    device = model_device(model)
    images = _images(images).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    n, size = len(images), tuple(images.shape[-2:])
    with torch.no_grad():
        y_o = _batched(lambda x: embed(aug.original(x)).float(), images, batch_size, device)

    def scores(params: AugmentationParams) -> dict:
        emb = embed_views(images, aug, params, gallery_size, embed, batch_size, y_o)
        return equivariance_scores(emb, predict)

    report = scores(sample_views(aug, n, gallery_size, size, generator, device))
    if per_augmentation:
        report["per_augmentation"] = {
            group: scores(sample_one_augmentation(aug, group, n * gallery_size, size, generator, device))
            for group in one_at_a_time_groups(aug)}
    report.update(n_images=n, views=gallery_size)
    return report


# ============================================================================================
# 5. Predictor sensitivity
# ============================================================================================
@torch.no_grad()
def sensitivity_from_embeddings(emb: ViewEmbeddings, predictor: Predictor, groups: dict[str, slice],
                                repeats: int = 3, seed: int = 0) -> dict[str, float]:
    """Which parameters does the predictor use? Permutation importance per parameter group.

    drop[g] = mean cos(y, u(y_o, t)) - mean cos(y, u(y_o, t~)), where t~ is t with the columns
    of group g (groups: name -> slice of t, e.g. aug.encoded_groups()) permuted across the rows,
    averaged over `repeats` permutations. A group the predictor ignores gives exactly 0; a group
    it relies on gives a positive drop.
    """
    generator = torch.Generator().manual_seed(seed)
    y_o = emb.y_o_rows
    base = _cos(emb.y, predictor(y_o, emb.t)).mean()
    drops = {}
    for name, columns in groups.items():
        total = 0.0
        for _ in range(repeats):
            perm = torch.randperm(len(emb.t), generator=generator).to(emb.t.device)
            t = emb.t.clone()
            t[:, columns] = emb.t[perm][:, columns]
            total += float(base - _cos(emb.y, predictor(y_o, t)).mean())
        drops[name] = total / repeats
    return drops


def predictor_sensitivity(model: EquiModModel, images: Images, aug: AugmentationConfig,
                          predictor: Optional[Predictor] = None, views: int = 2, seed: int = 0,
                          space: str = "y", repeats: int = 3, batch_size: int = 512) -> dict[str, float]:
    """Drop of mean cos(y, y_hat) when one parameter group of t is permuted across the batch.

    `views` views per image from `aug`; one entry per group of aug.encoded_groups() (crop, flip,
    jitter, order, brightness, contrast, saturation, hue, grayscale[, blur, solarize]). predictor
    and space as in :func:`equivariance_metrics`. Groups hidden from the model's predictor by its
    param_mask give exactly 0.
    """
    model.eval()
    embed, predict = _resolve(model, predictor, space)
    device = model_device(model)
    images = _images(images).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    params = sample_views(aug, len(images), views, tuple(images.shape[-2:]), generator, device)
    emb = embed_views(images, aug, params, views, embed, batch_size)
    return sensitivity_from_embeddings(emb, predict, aug.encoded_groups(), repeats, seed)


# ============================================================================================
# 6. What information is kept: augmentation parameters from frozen h
# ============================================================================================
def parameter_targets(params: AugmentationParams, aug: AugmentationConfig) -> dict[str, Tensor]:
    """The augmentation parameters a probe tries to read: name -> (N,) float (regressed) or bool
    (classified). Crop box (fractions), flip, the four jitter factors (hue: shift in turns),
    grayscale, and blur sigma / solarize when the config uses them."""
    p = params
    targets = {"crop_top": p.crop[:, 0], "crop_left": p.crop[:, 1], "crop_height": p.crop[:, 2],
               "crop_width": p.crop[:, 3], "flip": p.flip, "brightness": p.brightness,
               "contrast": p.contrast, "saturation": p.saturation, "hue": p.hue, "grayscale": p.grayscale}
    if aug.has_blur:
        targets["sigma"] = p.sigma
    if aug.has_solarize:
        targets["solarize"] = p.solarize
    return targets


def _probe_one(train_x, train_y: Tensor, test_x, test_y: Tensor) -> Optional[dict]:
    """Ridge R^2 for a float target, logistic accuracy (chance = majority rate) for a bool one;
    None when the target is constant on the train set (nothing to read)."""
    if train_y.dtype == torch.bool:
        if train_y.all() or not train_y.any():
            return None
        accuracy = linear_probe(train_x, train_y.long(), test_x, test_y.long())["top1"]
        majority = float(test_y.float().mean())
        return {"metric": "accuracy", "value": accuracy, "chance": max(majority, 1 - majority)}
    if float(train_y.float().std()) == 0:
        return None
    return {"metric": "r2", "value": ridge_probe(train_x, train_y, test_x, test_y), "chance": 0.0}


@torch.no_grad()
def _view_features(model: EquiModModel, images: Tensor, aug: AugmentationConfig, generator, pair: bool,
                   batch_size: int) -> tuple[Tensor, AugmentationParams]:
    """One view per image from `aug`: probe inputs (N, 2D) [h_o ; h_view] or (N, D) h_view, and params."""
    device = model_device(model)
    images = images.to(device)
    params = aug.sample(len(images), tuple(images.shape[-2:]), generator, device)
    h_view = torch.cat([model.features(apply(images[rows], params[rows], aug)).float()
                        for rows in torch.arange(len(images), device=device).split(batch_size)])
    if not pair:
        return h_view.cpu(), params.to("cpu")
    h_o = _batched(lambda x: model.features(aug.original(x)).float(), images, batch_size, device)
    return torch.cat([h_o, h_view], dim=1).cpu(), params.to("cpu")


def augmentation_probes(model: EquiModModel, train_images: Images, test_images: Images, aug: AugmentationConfig,
                        pair: bool = True, seed: int = 0, batch_size: int = 512) -> dict[str, Optional[dict]]:
    """How well can a linear probe read each augmentation parameter of a view from frozen h?

    One view per image, from `aug` itself (the training distribution); the probe is fitted on
    the views of train_images and scored on those of test_images. Input: [h_o ; h_view] when
    `pair` (the parameters are relative to the original: a hue shift or a brightness factor cannot
    be read from the view alone), else h_view. Continuous parameters: ridge R^2 (chance 0);
    booleans: logistic accuracy (chance = the majority rate on the test views).

    Returns {name: {"metric": "r2" | "accuracy", "value", "chance"}, or None for a parameter
    the config keeps constant}; names from :func:`parameter_targets`.
    """
    model.eval()
    generator = torch.Generator(device=model_device(model)).manual_seed(seed)
    train_x, train_p = _view_features(model, _images(train_images), aug, generator, pair, batch_size)
    test_x, test_p = _view_features(model, _images(test_images), aug, generator, pair, batch_size)
    train_t, test_t = parameter_targets(train_p, aug), parameter_targets(test_p, aug)
    return {name: _probe_one(train_x, train_t[name], test_x, test_t[name]) for name in train_t}


# ============================================================================================
# 7. A post-hoc predictor for models without the module
# ============================================================================================
class PosthocPredictor(nn.Module):
    """An equivariant predictor fitted *after* training, on a frozen model.

    Same shape as EquiMod's module: p(t) = BN(Linear(t)) and u([y_o ; p(t)]) = Linear + BN without
    affine (``depth`` > 0: an MLP). It lives in a *standardised* embedding space of the frozen
    model, y = (e - mean) / std with e = h (default), z or y, mean and std (D,) measured on the
    originals used to fit. Standardising plays the role of the BatchNorm without affine that ends
    EquiMod's g': cosines are taken around the data's centre, not around 0 (h comes after a ReLU,
    so every cos(h_a, h_b) would be high whatever the augmentation).

    Call it as any predictor: ``predictor(y_o, t) -> y_hat``, (N, D), (N, P) -> (N, D); embed with
    ``predictor.embed(model, x)``. ``history``: mean training loss per epoch.
    """

    def __init__(self, space: str, dim: int, param_dim: int, embed_dim: int = 128, depth: int = 0,
                 hidden_dim: int = 512):
        super().__init__()
        self.space = space
        self.param_encoder = ParameterEncoder(param_dim, embed_dim)
        self.predictor = EquivariantPredictor(dim, embed_dim, depth, hidden_dim)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.history: list[float] = []

    def embed(self, model: EquiModModel, x: Tensor) -> Tensor:
        """Standardised embedding (N, D) of normalised images x (N, 3, S, S) in the model's space."""
        return (_embedding(model, self.space)(x).float() - self.mean) / self.std

    def forward(self, y_o: Tensor, t: Tensor) -> Tensor:
        return self.predictor(torch.cat([y_o, self.param_encoder(t.float())], dim=1))


def fit_posthoc_predictor(model: EquiModModel, images: Images, aug: AugmentationConfig, epochs: int = 30,
                          space: str = "h", pairs: int = 2, embed_dim: int = 128, depth: int = 0,
                          hidden_dim: int = 512, batch_size: int = 256, lr: float = 1e-3,
                          temperature: float = 0.2, seed: int = 0, embed_batch_size: int = 512) -> PosthocPredictor:
    """Fit a :class:`PosthocPredictor` on a frozen model with EquiMod's equivariance loss.

    The model never changes. For each image, `pairs` pairs of views (t_1 from the config's view 1,
    t_2 from view 2) are embedded once and cached; the predictor is then trained for `epochs`
    passes over them with Adam (lr) on losses.equivariance_loss (InfoNCE over [y_1; y_2; y_hat_1;
    y_hat_2], temperature 0.2 as in the paper), batches of `batch_size` (the last partial batch is
    dropped). Space "h" by default: see the report of evaluate_run for why (the representation
    itself, the same question for every model). Returns the predictor in eval mode.
    """
    model.eval()
    device = model_device(model)
    images = _images(images).to(device)
    raw = _embedding(model, space)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        e_o = _batched(lambda x: raw(aug.original(x)).float(), images, embed_batch_size, device)
    with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the global RNG alone
        torch.manual_seed(seed)
        predictor = PosthocPredictor(space, e_o.shape[1], aug.encoded_dim, embed_dim, depth, hidden_dim).to(device)
    predictor.mean.copy_(e_o.mean(dim=0))
    predictor.std.copy_(e_o.std(dim=0).clamp_min(1e-6))

    def embed(x: Tensor) -> Tensor:
        return predictor.embed(model, x)

    every = torch.arange(len(images), device=device)
    cached = {"y_1": [], "y_2": [], "t_1": [], "t_2": []}
    for _ in range(pairs):
        for k in (1, 2):
            params = aug.sample(len(images), tuple(images.shape[-2:]), generator, device, view=k - 1)
            cached[f"y_{k}"].append(_embed_augmented(images, every, params, aug, embed, embed_batch_size))
            cached[f"t_{k}"].append(aug.encode(params))
    data = {name: torch.cat(values) for name, values in cached.items()}
    data["y_o"] = ((e_o - predictor.mean) / predictor.std).repeat(pairs, 1)
    _train_predictor(predictor, data, epochs, batch_size, lr, temperature, generator)
    return predictor.eval()


def _train_predictor(predictor: PosthocPredictor, data: dict[str, Tensor], epochs: int, batch_size: int,
                     lr: float, temperature: float, generator: torch.Generator) -> None:
    """Adam on the equivariance InfoNCE over cached (y_o, y_1, y_2, t_1, t_2), each (M, .)."""
    optimizer = torch.optim.Adam(predictor.parameters(), lr=lr)
    m = len(data["y_o"])
    batch_size = min(batch_size, m)
    predictor.train()
    for _ in range(epochs):
        order = torch.randperm(m, generator=generator, device=generator.device).to(data["y_o"].device)
        losses = []
        for index in order[: m // batch_size * batch_size].view(-1, batch_size):
            d = {name: value[index] for name, value in data.items()}
            y_hat_1, y_hat_2 = predictor(d["y_o"], d["t_1"]), predictor(d["y_o"], d["t_2"])
            loss = equivariance_loss(d["y_1"], d["y_2"], y_hat_1, y_hat_2, temperature, gather=False)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        predictor.history.append(sum(losses) / len(losses))


# ============================================================================================
# 8. Reports
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


def shuffled_subset(ds: ImageDataset, n: int, seed: int) -> ImageDataset:
    """At most n images of ds, in a seeded random order (so the first rows are a random sample)."""
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    return ds.subset(order)


def _splits(cfg, dataset, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """(train, test): the config's dataset splits, a given pair, or one dataset split 80 / 20."""
    if dataset is None:
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
    aug, timings, tic = cfg.augmentation(), {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tic
        timings[name] = round(time.perf_counter() - tic, 2)
        tic = time.perf_counter()

    train = shuffled_subset(train_set, sizes.n_train, seed)
    test = shuffled_subset(test_set, sizes.n_test, seed + 1)
    f_train, f_test = extract_features(model, train, aug), extract_features(model, test, aug)
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


def _device_for_eval(device) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    from .train import load_model

    device = _device_for_eval(device)
    model, cfg = load_model(run_dir, map_location=device)
    model.to(device)
    train_set, test_set = _splits(cfg, dataset, seed)
    report = evaluate_model(model, cfg, train_set, test_set, sizes or (FAST if fast else FULL), posthoc,
                            sgd_epochs, seed)
    report["meta"].update(run_dir=str(run_dir), random_init=False, fast=fast)
    return report


def evaluate_random_init(train_config, dataset=None, fast: bool = False, sizes: Optional[EvalSizes] = None,
                         posthoc: bool = True, device=None, seed: int = 0) -> dict:
    """The same report for the random-init baseline: the run's architecture, untrained (seeded).

    BatchNorm layers keep their initial running statistics (eval mode), as in
    benchmarks/dataset_probe.py. Arguments as :func:`evaluate_run`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EquiModModel(train_config.model_config()).to(_device_for_eval(device)).eval()
    train_set, test_set = _splits(train_config, dataset, seed)
    report = evaluate_model(model, train_config, train_set, test_set, sizes or (FAST if fast else FULL), posthoc,
                            None, seed)
    report["meta"].update(run_dir=None, random_init=True, fast=fast)
    return report


# ---- writing a report ---------------------------------------------------------------------
def _jsonable(value):
    """Plain JSON values: NaN and infinities become null, tensors and numpy values lists / numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
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


def _bar_figure(series: dict[str, dict[str, float]], title: str, ylabel: str):
    """Grouped bars: series name -> {category: value}; a matplotlib Figure (no pyplot, no backend change)."""
    from matplotlib.figure import Figure

    categories = list(next(iter(series.values())))
    fig = Figure(figsize=(max(5.0, 0.6 * len(categories) + 2), 3.4), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        heights = [values.get(c) if values.get(c) is not None and math.isfinite(values.get(c)) else 0.0
                   for c in categories]
        ax.bar(np.arange(len(categories)) + (i - (len(series) - 1) / 2) * width, heights, width, label=name)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(categories)), categories, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return fig


def report_figures(report: dict) -> dict[str, object]:
    """Figures of a report: name -> matplotlib Figure (sensitivity, per-augmentation gain, probes)."""
    figures = {}
    sens = {label: report[k] for k, label in (("sensitivity", "module"), ("sensitivity_posthoc", "post-hoc"))
            if report.get(k)}
    if sens:
        figures["sensitivity"] = _bar_figure(sens, "Predictor sensitivity: drop of cos(y, y_hat) when a group "
                                             "of t is shuffled", "drop")
    per = {label: {g: e["gain"] for g, e in report[k]["per_augmentation"].items()}
           for k, label in (("equivariance", "module"), ("equivariance_posthoc", "post-hoc"))
           if report.get(k) and report[k].get("per_augmentation")}
    if per:
        figures["per_augmentation"] = _bar_figure(per, "Gain cos(y, y_hat) - cos(y, y_o), one augmentation "
                                                  "at a time", "gain")
    probes = {name: r["value"] for name, r in report.get("augmentation_probes", {}).items() if r}
    if probes:
        figures["augmentation_probes"] = _bar_figure({_model_name(report): probes}, "Augmentation parameters "
                                                     "read from h (R^2 or accuracy)", "R^2 / accuracy")
    return figures


def write_report(report: dict, out_dir) -> dict[str, Path]:
    """Write report.json, report.md and one PNG per figure into out_dir; returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    paths["json"].write_text(json.dumps(_jsonable(report), indent=2))
    paths["markdown"].write_text(report_markdown(report))
    for name, fig in report_figures(report).items():
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=120)
    return paths
