"""Static figures: matplotlib Figures to save, or to leave as a notebook cell's last value.

    views_gallery(images[:6], AugmentationConfig.synthetic(), seed=0)   # two views and their t
    sweep_figure(model, None, images[0], aug, "hue")      # one augmentation, identity -> strongest
    invariance_curves(model, images[:64], aug)            # 1 - cos(view, original) per augmentation
    grouped_bars({"SimCLR": {...}, "EquiMod": {...}}, "title", "accuracy")   # one helper for bars
    frontier(summary)                                     # shape against object colour, one point per method

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, no backend change) except
where a notebook wants pyplot's inline display (views_gallery). PCAMap places embeddings on the
plane of their two main principal components (scikit-learn's PCA).
"""

from __future__ import annotations

import math
import textwrap
from typing import Optional, Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from .augment import AugmentationConfig, apply
from .dataset import as_images
from .equivariance import embed_augmented, invariance_distances, scorer
from .models import model_device
from .recipes import describe_params, sample_views, sweep_params


def to_numpy_image(image: torch.Tensor):
    """(3, H, W) uint8 or float in [0, 1] -> (H, W, 3) float numpy array for imshow."""
    image = image.detach().cpu()
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


def use_headless_backend() -> None:
    """Select matplotlib's file-only backend (for the CLI and tests; notebooks keep inline)."""
    matplotlib.use("Agg")


def views_gallery(images: torch.Tensor, config: AugmentationConfig, seed: int = 0, show_vectors: bool = True):
    """Original, two augmented views and their parameter vectors for a few images (a Figure).

    images: (n, 3, H, W) uint8, n small (4-8). Each column is one image; rows: the original, view 1
    with its parameters, view 2 with its parameters, and (if show_vectors) the encoded vectors t.
    """
    import matplotlib.pyplot as plt

    n = images.shape[0]
    generator = torch.Generator(device=images.device).manual_seed(seed)
    size = tuple(images.shape[-2:])
    params = config.sample_pair(n, size, generator, images.device)
    views = [apply(images, p, config, normalize=False) for p in params]
    vectors = [config.encode(p) for p in params]

    rows = 4 if show_vectors else 3
    fig, axes = plt.subplots(rows, n, figsize=(2.3 * n, 2.3 * rows + 0.4), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(to_numpy_image(images[j]))
        axes[0, j].set_title("original x_o" if j == 0 else "", fontsize=8)
        for k in (0, 1):
            axes[k + 1, j].imshow(to_numpy_image(views[k][j]))
            axes[k + 1, j].set_title(textwrap.fill(f"view {k + 1}: " + describe_params(params[k], j), 34), fontsize=6)
        if show_vectors:
            ax = axes[3, j]
            ax.imshow(torch.stack([vectors[0][j], vectors[1][j]]).cpu().numpy(), cmap="coolwarm",
                      vmin=-2.5, vmax=2.5, aspect="auto")
            ax.set_yticks([0, 1], ["t_1", "t_2"], fontsize=7)
            ax.set_xticks(range(config.encoded_dim))
            ax.set_xticklabels(config.column_names(), rotation=90, fontsize=5)
            ax.set_title("encoded t (standardised)", fontsize=7)
        for r in range(3):
            axes[r, j].axis("off")
    fig.suptitle(f"Augmentations are parameters: two views of each image and the vectors t the predictor sees "
                 f"(seed {seed})", fontsize=9)
    fig.tight_layout()
    return fig

# ---- bars ------------------------------------------------------------------------------------
def grouped_bars(series: dict[str, dict[str, Optional[float]]], title: str, ylabel: str, ax=None,
                 errors: Optional[dict[str, dict[str, float]]] = None, rotation: int = 45):
    """Grouped bars: series name -> {category: value}, one group of bars per category; returns the Axes.

    A missing or non-finite value draws no bar. errors: the same shape, drawn as error bars (e.g.
    the std over seeds). ax: draw into these axes (default: a new Figure without pyplot).
    """
    categories = list(dict.fromkeys(c for values in series.values() for c in values))  # in first-seen order
    if ax is None:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(max(5.0, 0.6 * len(categories) + 2), 3.4), layout="constrained").add_subplot()
    width = 0.8 / max(len(series), 1)

    def finite(value):
        return value if value is not None and math.isfinite(value) else np.nan

    for i, (name, values) in enumerate(series.items()):
        heights = [finite(values.get(c)) for c in categories]
        yerr = [finite((errors or {}).get(name, {}).get(c)) for c in categories] if errors else None
        ax.bar(np.arange(len(categories)) + (i - (len(series) - 1) / 2) * width, heights, width, label=name,
               yerr=yerr, capsize=3 if errors else 0)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(categories)), categories, rotation=rotation, ha="right" if rotation else "center",
                  fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return ax


def bar_figure(series: dict[str, dict[str, Optional[float]]], title: str, ylabel: str):
    """grouped_bars on a Figure of its own; returns the Figure (for reports and files)."""
    return grouped_bars(series, title, ylabel).figure


def frontier(points: dict[str, dict[str, Optional[dict]]], ax=None, x: str = "shape_acc", y: str = "colour_acc",
             invariant: str = "simclr", twin: str = "simclr-no-colour", target: Optional[tuple] = (0.5, 0.02)):
    """Shape against kept object colour: one labelled point per method, its std over seeds as error bars.

    points: a compare summary, {method: {metric: {"mean", "std", "n"} or None}}; a method without x or y
    is left out. The ``invariant`` model and its ``twin`` trained without colour augmentation are joined
    by a dashed line: the object colour invariance throws away (their colour gap). target: (share, margin)
    shades where a method keeps at least ``share`` of that gap with an x at most ``margin`` below the
    invariant model's (None: no shading). ax: draw into these axes (default: a new Figure without pyplot).
    Returns the Figure.
    """
    if ax is None:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(7.0, 5.0), layout="constrained").add_subplot()
    drawn = {name: (row[x], row[y]) for name, row in points.items() if row.get(x) and row.get(y)}
    for name, (px, py) in drawn.items():
        end = name in (invariant, twin)
        ax.errorbar(px["mean"], py["mean"], xerr=px.get("std", 0.0), yerr=py.get("std", 0.0), fmt="s" if end else "o",
                    color="black" if end else None, capsize=3, markersize=6)   # labelled on the plot, not in the legend
        ax.annotate(name, (px["mean"], py["mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.margins(x=0.12, y=0.05)   # room for the labels right of the points
    if invariant in drawn and twin in drawn:
        (ix, iy), (tx, ty) = ((p["mean"] for p in drawn[k]) for k in (invariant, twin))
        ax.plot([ix, tx], [iy, ty], "k--", linewidth=1, label=f"what invariance throws away ({twin} - {invariant})")
        if target is not None:
            share, margin = target
            (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
            left, bottom = ix - margin, iy + share * (ty - iy)
            ax.fill_between([left, max(x1, left)], bottom, max(y1, bottom), color="tab:green", alpha=0.12,
                            label=f"target: >= {share:.0%} of the lost colour kept, shape >= {invariant}'s - {margin}")
            ax.set_xlim(x0, max(x1, left))
            ax.set_ylim(y0, max(y1, bottom))
    ax.set_xlabel(f"{x} (linear probe on frozen h)")
    ax.set_ylabel(f"{y} (linear probe on frozen h)")
    ax.set_title("What each method keeps: shape against object colour (mean ± std over seeds)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    return ax.figure

# ---- a 2-D map of an embedding space ----------------------------------------------------------
class PCAMap:
    """The plane of the two main principal components of L2-normalised embeddings.

    Fitted once on a cloud (N, D) (scikit-learn's PCA); afterwards ``pca(e)`` maps (M, D) ->
    (M, 2) numpy. Embeddings are normalised first, because every number the explorers report is a
    cosine. ``explained``: the fraction of the cloud's variance along each axis (how much of the
    space the map shows). Each axis gets a fixed sign (its largest loading positive), so the same
    cloud gives the same map.
    """

    def __init__(self, embeddings: torch.Tensor):
        from sklearn.decomposition import PCA

        x = F.normalize(embeddings.detach().float().cpu(), dim=1).numpy().astype(np.float64)
        k = min(2, *x.shape)
        pca = PCA(n_components=k, svd_solver="full").fit(x)
        components = np.zeros((2, x.shape[1]))
        components[:k] = pca.components_
        largest = components[np.arange(2), np.abs(components).argmax(axis=1)]
        self.components = components * np.where(largest < 0, -1.0, 1.0)[:, None]
        self.mean = pca.mean_
        self.explained = list(pca.explained_variance_ratio_[:k]) + [0.0] * (2 - k)

    def __call__(self, embeddings: torch.Tensor) -> np.ndarray:
        x = F.normalize(embeddings.detach().float().cpu().reshape(-1, self.mean.size), dim=1).numpy()
        return ((x - self.mean) @ self.components.T).astype(np.float32)

# ---- sweeps and invariance curves --------------------------------------------------------------
def _one_image(image) -> torch.Tensor:
    """(1, 3, H, W) on the CPU from (3, H, W) or (1, 3, H, W)."""
    image = as_images(image)
    if len(image) != 1:
        raise ValueError(f"expected one image, got a batch of {len(image)}")
    return image

@torch.no_grad()
def sweep_data(model, predictor, image, aug: AugmentationConfig, group: str, steps: int = 9, space: str = "y",
               cloud_views: int = 64, seed: int = 0) -> dict:
    """The numbers behind sweep_figure: the image's embeddings along one augmentation's sweep.

    image: (3, H, W) uint8; model, predictor, space as in DisplacementExplorer (None: model.predict
    in y; a PosthocPredictor: its own space). Returns {"sweep": Sweep, "views": (S, 3, s, s) float
    in [0, 1], "y_o": (D,), "y", "y_hat": (S, D), "cos_pred", "cos_invariant", "gain": (S,) numpy,
    "cloud": (cloud_views, D) embeddings of random views of the image (seeded), "map": a PCAMap
    fitted on the cloud and both trajectories}.
    """
    model.eval()
    embed, predict = scorer(model, predictor, space)
    device = model_device(model)
    image = _one_image(image)
    sweep = sweep_params(aug, group, steps, tuple(image.shape[-2:]))
    n = len(sweep.params)
    views = apply(image.expand(n, -1, -1, -1), sweep.params, aug, normalize=False)
    y_o = embed(aug.original(image.to(device))).float()
    y = embed(aug.normalize(views).to(device)).float()
    y_hat = predict(y_o.expand(n, -1), aug.encode(sweep.params).to(device)).float()
    generator = torch.Generator().manual_seed(seed)
    cloud_params = sample_views(aug, 1, cloud_views, tuple(image.shape[-2:]), generator).to(device)
    cloud = embed_augmented(image.to(device), torch.zeros(cloud_views, dtype=torch.long, device=device),
                             cloud_params, aug, embed, 256)
    cos_pred = F.cosine_similarity(y, y_hat).cpu().numpy()
    cos_invariant = F.cosine_similarity(y, y_o.expand(n, -1)).cpu().numpy()
    return {"sweep": sweep, "views": views, "y_o": y_o[0].cpu(), "y": y.cpu(), "y_hat": y_hat.cpu(),
            "cos_pred": cos_pred, "cos_invariant": cos_invariant, "gain": cos_pred - cos_invariant,
            "cloud": cloud.cpu(), "map": PCAMap(torch.cat([cloud, y, y_hat, y_o]))}

def sweep_figure(model, predictor, image, aug: AugmentationConfig, group: str, steps: int = 9, space: str = "y",
                 cloud_views: int = 64, seed: int = 0):
    """One augmentation from identity to its strongest: actual vs predicted embeddings (a Figure).

    Top: the views. Bottom left ("map" axes): the trajectories of y (actual, solid) and y_hat
    (predicted, dashed) on a PCA map of the image's embeddings, y_o in black, random views in grey.
    Bottom right ("cosine" axes): cos(y, y_hat) and cos(y, y_o) against the strength; the gap
    between them is the gain. Arguments as ``sweep_data``.
    """
    from matplotlib.figure import Figure

    d = sweep_data(model, predictor, image, aug, group, steps, space, cloud_views, seed)
    sweep, pca = d["sweep"], d["map"]
    n = len(sweep.values)
    fig = Figure(figsize=(max(8.0, 1.1 * n), 5.4))
    grid = fig.add_gridspec(2, n, height_ratios=(1, 2.6), left=0.05, right=0.98, bottom=0.1, top=0.9,
                            hspace=0.25, wspace=0.6)
    for k in range(n):
        ax = fig.add_subplot(grid[0, k], label=f"view {k}")
        ax.imshow(to_numpy_image(d["views"][k]))
        ax.set_title(f"{sweep.values[k]:.2f}", fontsize=7)
        ax.axis("off")
    half = max(1, n // 2)
    ax = fig.add_subplot(grid[1, :half], label="map")
    cloud, y, y_hat, y_o = pca(d["cloud"]), pca(d["y"]), pca(d["y_hat"]), pca(d["y_o"])[0]
    ax.scatter(cloud[:, 0], cloud[:, 1], s=6, c="0.85", linewidths=0, label="random views")
    ax.plot(y[:, 0], y[:, 1], "-o", color="tab:blue", markersize=4, label="y (actual)")
    ax.plot(y_hat[:, 0], y_hat[:, 1], "--X", color="tab:orange", markersize=5, label="y_hat (predicted)")
    ax.scatter(*y_o, s=50, c="black", zorder=3, label="y_o")
    for points in (y, y_hat):  # where each trajectory ends
        ax.annotate(f"{sweep.values[-1]:.2f}", points[-1], fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"PC1 ({pca.explained[0]:.0%})", fontsize=8)
    ax.set_ylabel(f"PC2 ({pca.explained[1]:.0%})", fontsize=8)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[1, half:], label="cosine")
    ax.plot(sweep.values, d["cos_pred"], "-o", color="tab:orange", label="cos(y, y_hat): prediction")
    ax.plot(sweep.values, d["cos_invariant"], "-o", color="0.3", label="cos(y, y_o): invariance")
    ax.fill_between(sweep.values, d["cos_invariant"], d["cos_pred"], color="tab:orange", alpha=0.15)
    ax.set_xlabel(sweep.label, fontsize=8)
    ax.set_ylabel("cosine to y", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.suptitle(f"Sweep of {group}: does the prediction follow the embedding? (shaded gap = gain)", fontsize=10)
    return fig

def invariance_curves(model, images, aug: AugmentationConfig, groups: Optional[Sequence[str]] = None,
                      steps: int = 9, spaces: Optional[Sequence[str]] = None, centre: bool = True):
    """How much each augmentation moves the embedding: 1 - cos(e(view), e(x_o)) vs strength (a Figure).

    One panel per space (axes labelled by the space: "h", then "y", or "z" for a baseline), one
    line per augmentation; x is the strength as a fraction of the config's maximum (negative:
    below identity, for brightness, contrast, saturation and hue). A flat line at 0 is an
    invariant embedding. Arguments as ``invariance_distances``.
    """
    from matplotlib.figure import Figure

    d = invariance_distances(model, images, aug, groups, steps, spaces, centre)
    spaces = list(d["distance"])
    fig = Figure(figsize=(4.6 * len(spaces), 3.8), layout="constrained")
    for k, space in enumerate(spaces):
        ax = fig.add_subplot(1, len(spaces), k + 1, label=space)
        for group, distance in d["distance"][space].items():
            ax.plot(d["fraction"][group], distance, "-o", markersize=3, label=group)
        ax.set_title(f"space {space}" + (" (centred)" if centre else ""), fontsize=9)
        ax.set_xlabel("strength / config maximum (0 = identity)", fontsize=8)
        ax.set_ylabel("1 - cos(e(view), e(x_o))", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(f"Invariance per augmentation, mean over {len(as_images(images))} images", fontsize=10)
    return fig
