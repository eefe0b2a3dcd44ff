"""Probes: what a frozen representation knows, read by small models fitted on top of it.

    f_train, f_test = extract_features(model, train, aug), extract_features(model, test, aug)
    linear_probe(f_train["h"], train.targets, f_test["h"], test.targets)   # {"top1", "top5"}
    label_probes(f_train["h"], train.labels, f_test["h"], test.labels)     # every label column
    knn_accuracy(f_train["h"], train.targets, f_test["h"], test.targets)   # weighted 200-NN
    augmentation_probes(model, train.images[:1000], test.images[:500], aug)  # read t back from h
    linear_eval_sgd(model, train, test, aug, epochs=90)                    # the paper's protocol (GPU)

Sections: 1. frozen features of the originals x_o (h from the backbone, z, y) and the helpers
(``model.embed``, ``models.batched``); 2. linear probes (logistic regression on
standardised h, ridge for continuous factors, one per label column) and the paper's SGD linear
evaluation; 3. weighted kNN; 4. probes for the augmentation parameters of a view.

Conventions: accuracies are fractions in [0, 1]; R^2 may be negative (worse than predicting the
mean). Every function puts the model in eval mode and runs without gradients (except the heads it
fits). Randomness comes from explicit seeds.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import AugmentationConfig, AugmentationParams
from .augment_cuda import augmenter_for
from .dataset import ImageDataset, Images, as_images
from .equivariance import embed_augmented
from .models import EquiModModel, batched, model_device
from .recipes import centre_crop_params, linear_eval_augmentation, parameter_targets


# ============================================================================================
# 1. Frozen features
# ============================================================================================
def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)

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
    for chunk in as_images(dataset).split(batch_size):
        for name, value in zip(("h", "z", "y"), model.embed(aug.original(chunk.to(device)))):
            if value is not None:
                out[name].append(value.float().cpu())
    return {name: torch.cat(values) if values else None for name, values in out.items()}

# ============================================================================================
# 2. Linear probes and the paper's linear evaluation
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

    Class columns (int64): ``linear_probe``, reported as {"metric": "accuracy", "value": top-1,
    "top5" (more than 5 classes), "chance": 1 / number of classes}. Continuous columns (float32):
    ``ridge_probe``, {"metric": "r2", "value", "chance": 0.0}; angle columns named in
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


def linear_eval_sgd(model: EquiModModel, train_set: ImageDataset, test_set: ImageDataset, aug: AugmentationConfig,
                    label: Optional[str] = None, epochs: int = 90, lr: float = 0.2, batch_size: int = 256,
                    momentum: float = 0.9, weight_decay: float = 0.0, test_crop: float = 32 / 36,
                    final_lr: float = 1e-4, device=None, seed: int = 0) -> dict[str, float]:
    """The paper's linear evaluation: a linear layer on the frozen backbone, trained with SGD.

    Protocol (docs/design.md): frozen f (eval mode: BatchNorm uses its running statistics), `epochs`
    (90) of SGD with Nesterov momentum 0.9, lr 0.2, batch 256, cosine schedule per step down to
    `final_lr` (1e-4, as the official code); train-time random crop (scale 0.08-1) + flip from our
    augmentation engine, features recomputed for every batch; test: bicubic resize to S / test_crop
    then centre crop S (CIFAR: 36 -> 32), as the official test transform.
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
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=final_lr)
    train_aug = linear_eval_augmentation(aug)
    train_augmenter = augmenter_for(train_aug, device)  # on CUDA: the same pixels in fewer launches
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
            loss = F.cross_entropy(head(features(train_augmenter.apply(x, params))), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.detach())
    test_augmenter = augmenter_for(train_aug.replace(interpolation="bicubic"), device)  # the official test resize

    def test_logits(x: Tensor) -> Tensor:
        return head(features(test_augmenter.apply(x, centre_crop_params(len(x), test_crop, device))))

    with torch.no_grad():
        logits = batched(test_logits, test_set.images, batch_size, device)
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
# 4. Augmentation parameters from frozen h
# ============================================================================================
def _probe_one(train_x, train_y: Tensor, test_x, test_y: Tensor) -> Optional[dict]:
    """Ridge R^2 for a float target, logistic accuracy (chance = majority rate) for a bool one.

    None when the target is constant on the train set (nothing to read).
    """
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
    h_view = embed_augmented(images, torch.arange(len(images), device=device), params, aug, model.features,
                             batch_size)
    if not pair:
        return h_view.cpu(), params.to("cpu")
    h_o = batched(lambda x: model.features(aug.original(x)).float(), images, batch_size, device)
    return torch.cat([h_o, h_view], dim=1).cpu(), params.to("cpu")

def augmentation_probes(model: EquiModModel, train_images: Images, test_images: Images, aug: AugmentationConfig,
                        pair: bool = True, seed: int = 0, batch_size: int = 512) -> dict[str, Optional[dict]]:
    """How well a linear probe reads each augmentation parameter of a view from frozen h.

    One view per image, from `aug` itself (the training distribution); the probe is fitted on
    the views of train_images and scored on those of test_images. Input: [h_o ; h_view] when
    `pair` (the parameters are relative to the original: a hue shift or a brightness factor cannot
    be read from the view alone), else h_view. Continuous parameters: ridge R^2 (chance 0);
    booleans: logistic accuracy (chance = the majority rate on the test views).

    Returns {name: {"metric": "r2" | "accuracy", "value", "chance"}, or None for a parameter
    the config keeps constant}; names from ``parameter_targets``.
    """
    model.eval()
    generator = torch.Generator(device=model_device(model)).manual_seed(seed)
    train_x, train_p = _view_features(model, as_images(train_images), aug, generator, pair, batch_size)
    test_x, test_p = _view_features(model, as_images(test_images), aug, generator, pair, batch_size)
    train_t, test_t = parameter_targets(train_p, aug), parameter_targets(test_p, aug)
    return {name: _probe_one(train_x, train_t[name], test_x, test_t[name]) for name in train_t}
