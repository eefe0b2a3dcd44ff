"""Figures (and, later, ipywidgets explorers) that the notebooks and the CLI show.

    fig = views_gallery(images[:6], AugmentationConfig.synthetic(), seed=0)
    fig.savefig("gallery.png")
"""

from __future__ import annotations

import matplotlib

import torch

from .augment import AugmentationConfig, AugmentationParams, apply


def to_numpy_image(image: torch.Tensor):
    """(3, H, W) uint8 or float in [0, 1] -> (H, W, 3) float numpy array for imshow."""
    image = image.detach().cpu()
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


def describe_params(params: AugmentationParams, index: int = 0) -> str:
    """A short human-readable line for one image's parameters (e.g. for a figure title)."""
    p = params[index]
    top, left, h, w = p.crop[0].tolist()
    parts = [f"crop {h:.2f}x{w:.2f} @({top:.2f},{left:.2f})"]
    if p.flip[0]:
        parts.append("flip")
    if p.jitter[0]:
        names = "".join("BCSH"[i] for i in p.order[0].tolist())
        parts.append(f"jitter {names} b{p.brightness[0]:.2f} c{p.contrast[0]:.2f} "
                     f"s{p.saturation[0]:.2f} h{p.hue[0]:+.2f}")
    if p.grayscale[0]:
        parts.append("gray")
    if p.blur[0]:
        parts.append(f"blur {p.sigma[0]:.1f}")
    if p.solarize[0]:
        parts.append("solarize")
    return ", ".join(parts)


def views_gallery(images: torch.Tensor, config: AugmentationConfig, seed: int = 0, show_vectors: bool = True):
    """Original, two augmented views and their parameter vectors for a few images (a Figure).

    images: (n, 3, H, W) uint8, n small (4-8). Each column is one image; rows: the original, view 1
    with its parameters, view 2 with its parameters, and (if show_vectors) the encoded vectors t.
    """
    import matplotlib.pyplot as plt

    n = images.shape[0]
    generator = torch.Generator(device=images.device).manual_seed(seed)
    size = tuple(images.shape[-2:])
    params = [config.sample(n, size, generator, images.device, view=v) for v in (0, 1)]
    views = [apply(images, p, config, normalize=False) for p in params]
    vectors = [config.encode(p) for p in params]

    rows = 4 if show_vectors else 3
    fig, axes = plt.subplots(rows, n, figsize=(2.3 * n, 2.3 * rows + 0.4), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(to_numpy_image(images[j]))
        axes[0, j].set_title("original x_o" if j == 0 else "", fontsize=8)
        for k in (0, 1):
            axes[k + 1, j].imshow(to_numpy_image(views[k][j]))
            axes[k + 1, j].set_title(_wrap(f"view {k + 1}: " + describe_params(params[k], j)), fontsize=6)
        if show_vectors:
            ax = axes[3, j]
            ax.imshow(torch.stack([vectors[0][j], vectors[1][j]]).cpu().numpy(), cmap="coolwarm",
                      vmin=-2.5, vmax=2.5, aspect="auto")
            ax.set_yticks([0, 1], ["t_1", "t_2"], fontsize=7)
            ax.set_xticks(range(config.encoded_dim))
            ax.set_xticklabels(column_names(config), rotation=90, fontsize=5)
            ax.set_title("encoded t (standardised)", fontsize=7)
        for r in range(3):
            axes[r, j].axis("off")
    fig.suptitle(f"Augmentations are parameters: two views of each image and the vectors t the predictor sees "
                 f"(seed {seed})", fontsize=9)
    fig.tight_layout()
    return fig


def column_names(config: AugmentationConfig) -> list[str]:
    """Names of the encoded vector's columns, in order (for tables and plots)."""
    names = []
    for group, width in config.layout():
        if group == "crop":
            names += ["top", "left", "height", "width"]
        elif group == "order":
            names += [f"op{i + 1}" for i in range(4)]
        elif group == "hue" and width == 2:
            names += ["hue cos", "hue sin"]
        elif group == "blur":
            names += ["blur", "sigma"]
        else:
            names.append(group)
    return names


def _wrap(text: str, width: int = 34) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width))


def use_headless_backend() -> None:
    """Select matplotlib's file-only backend (for the CLI and tests; notebooks keep inline)."""
    matplotlib.use("Agg")
