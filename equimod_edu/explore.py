"""Figures and ipywidgets explorers that the notebooks and the CLI show.

Static figures (matplotlib Figures; save them or leave them as a cell's last value):

    fig = views_gallery(images[:6], AugmentationConfig.synthetic(), seed=0)
    fig.savefig("gallery.png")
    sweep_figure(model, None, images[0], aug, "hue")     # one augmentation, identity -> strongest
    invariance_curves(model, images[:64], aug)            # 1 - cos(view, original) per augmentation

Explorers (core ipywidgets + matplotlib, for ``%matplotlib inline`` in JupyterLab, Notebook, Colab):

    enable_colab_widgets()                                # a no-op outside Colab
    AugmentationExplorer(images, aug).widget              # sliders -> t, the view, encode(t)
    DisplacementExplorer({"SimCLR": (simclr, posthoc), "EquiMod": (equimod, None)}, images, aug).widget
    curves = LiveCurves(); Trainer(cfg, callbacks={"on_log": [curves], "on_train_end": [curves]})

Every explorer is a small class: ``controls`` (name -> widget, one per augmentation),
``params()`` (the AugmentationParams the controls describe), ``compute()`` (a dict of numbers and
arrays: pure, testable without a browser), ``render()`` (a matplotlib figure into an
``ipywidgets.Output``, and the numbers as text into ``readout``, an ``ipywidgets.HTML``) and
``widget`` (the box to display). Moving a control calls ``update()`` = compute + render.
``explorer.set(hue=0.3, flip=True)`` moves several controls with one update. In the page, every
part carries a CSS class (``equimod-explorer``, ``equimod-control-<name>``, ``equimod-figure``,
``equimod-readout``): the browser test finds them by it, and a teacher can restyle them.
"""

from __future__ import annotations

import html
import io
import itertools
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from .augment import JITTER_OPS, AugmentationConfig, AugmentationParams, apply, check_images
from .evaluate import (PosthocPredictor, _embed_augmented, _embedding, _resolve, model_device, one_at_a_time_groups,
                       sample_views)


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



# ============================================================================================
# Notebook plumbing: Colab, "are we in a kernel?", showing a figure in an Output
# ============================================================================================
def enable_colab_widgets() -> bool:
    """In Google Colab, switch on the widget manager that ipywidgets 8 needs; elsewhere do nothing.

    Call it once before displaying an explorer. Returns True when running in Colab (and enabled).
    JupyterLab and classic Notebook need nothing: the explorers use core ipywidgets only.
    """
    try:
        from google.colab import output  # only importable inside Colab
    except ImportError:
        return False
    output.enable_custom_widget_manager()
    return True


def in_notebook() -> bool:
    """Whether an IPython kernel (Jupyter, Colab) runs this code: only then do explorers display."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")


def _png(fig, dpi: int) -> bytes:
    """Render a Figure to PNG bytes (the same pixels in every front end, whatever the backend)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _show(output, png: bytes) -> None:
    """Replace what an ipywidgets.Output shows by the image (in a kernel; a no-op elsewhere)."""
    if not in_notebook():
        return
    from IPython.display import Image, clear_output, display

    with output:
        clear_output(wait=True)  # wait: swap in the new image without a blank flash
        display(Image(data=png, format="png"))


def _as_images(images) -> torch.Tensor:
    """(N, 3, H, W) images on the CPU, from an ImageDataset, a batch, or one (3, H, W) image."""
    images = getattr(images, "images", images)
    if isinstance(images, torch.Tensor) and images.dim() == 3:
        images = images[None]
    check_images(images)
    return images.cpu()


# ============================================================================================
# Controls shared by the explorers: one widget per augmentation -> AugmentationParams
# ============================================================================================
#: Every jitter order the "order" menu offers (all 24 permutations of B, C, S, H).
JITTER_ORDERS = tuple(itertools.permutations(range(4)))
#: Names of the controls, in display columns (geometry | colour jitter | the rest).
CONTROL_COLUMNS = (("image", "crop_scale", "crop_ratio", "crop_top", "crop_left", "flip"),
                   ("brightness", "contrast", "saturation", "hue", "order"),
                   ("grayscale", "sigma", "solarize"))
CONTROL_NAMES = tuple(name for column in CONTROL_COLUMNS for name in column)


def crop_box(scale: float, ratio: float = 1.0, top: float = 0.0, left: float = 0.0,
             image_aspect: float = 1.0) -> tuple[float, float, float, float]:
    """(top, left, height, width), fractions of the image, of a crop set the RandomResizedCrop way.

    scale: area of the crop / area of the image; ratio: the crop's width / height in pixels;
    image_aspect: the image's width / height. Then height * width = scale and
    (width * W) / (height * H) = ratio give height = sqrt(scale * aspect / ratio) and
    width = sqrt(scale * ratio / aspect); a side longer than the image is cut to it (the area then
    shrinks), and (top, left) is moved back so that the box fits inside the image.
    """
    if not (0 < scale <= 1 and ratio > 0 and image_aspect > 0):
        raise ValueError(f"need 0 < scale <= 1 and ratio > 0, got scale={scale}, ratio={ratio}")
    height = min(1.0, math.sqrt(scale * image_aspect / ratio))
    width = min(1.0, math.sqrt(scale * ratio / image_aspect))
    top = min(max(float(top), 0.0), 1.0 - height)
    left = min(max(float(left), 0.0), 1.0 - width)
    return top, left, height, width


def augmentation_controls(aug: AugmentationConfig, n_images: int = 1, continuous_update: bool = False) -> dict:
    """Widgets, one per augmentation of `aug` (plus the image index), all at identity values.

    image: IntSlider over the images; crop_scale (area fraction, the config's minimum .. 1),
    crop_ratio (width / height, the config's range, 1 included), crop_top and crop_left
    (fractions, clamped so the box fits, see crop_box); flip; brightness, contrast, saturation
    (factors over the config's range [1 - s, 1 + s], or [0.6, 1.4] where the config leaves one at 0);
    hue (turns, -0.5 .. 0.5: the whole colour circle, beyond the config's +-h); order (the jitter
    order); grayscale; sigma (blur std in pixels, 0 = no blur) if the config blurs; solarize if it
    solarizes. ``continuous_update=False`` updates when a slider is released, which keeps slow
    front ends (Colab) from queueing work while dragging.
    """
    import ipywidgets as widgets

    style, layout = {"description_width": "90px"}, widgets.Layout(width="320px")

    def slider(description, low, high, value, step=0.01):
        return widgets.FloatSlider(value=value, min=low, max=high, step=step, description=description,
                                   readout_format=".2f", continuous_update=continuous_update, style=style,
                                   layout=layout)

    def toggle(description):
        return widgets.Checkbox(value=False, description=description, indent=False)

    controls = {
        "image": widgets.IntSlider(value=0, min=0, max=max(n_images - 1, 0), description="image",
                                   continuous_update=continuous_update, style=style, layout=layout),
        "crop_scale": slider("crop scale", aug.crop_scale[0], 1.0, 1.0),
        "crop_ratio": slider("aspect w/h", min(aug.crop_ratio[0], 1.0), max(aug.crop_ratio[1], 1.0), 1.0),
        "crop_top": slider("crop top", 0.0, 1.0, 0.0),
        "crop_left": slider("crop left", 0.0, 1.0, 0.0),
        "flip": toggle("flip"),
    }
    for name in ("brightness", "contrast", "saturation"):
        strength = getattr(aug, name) or 0.4
        controls[name] = slider(name, max(0.0, 1 - strength), 1 + strength, 1.0)
    controls["hue"] = slider("hue (turns)", -0.5, 0.5, 0.0)
    controls["order"] = widgets.Dropdown(options=[(" ".join("BCSH"[i] for i in order), order)
                                                  for order in JITTER_ORDERS],
                                         value=(0, 1, 2, 3), description="jitter order", style=style,
                                         layout=layout)
    controls["grayscale"] = toggle("grayscale")
    if aug.has_blur:
        controls["sigma"] = slider("blur sigma", 0.0, aug.blur_sigma[1], 0.0, step=0.05)
    if aug.has_solarize:
        controls["solarize"] = toggle("solarize")
    return controls


def params_from_values(values: dict, aug: AugmentationConfig, image_size: Optional[tuple[int, int]] = None
                       ) -> AugmentationParams:
    """The parameters (one row) that control values describe: a pure function, no widgets needed.

    values: name -> value (see augmentation_controls; missing names keep identity values, "image"
    is ignored); image_size: (H, W) of the input image (its aspect enters the crop box).
    Starts from AugmentationParams.identity(1): jitter is on only when a factor differs from
    identity (then the order is the "order" value), blur only when sigma > 0 (and the config
    blurs), solarize only when the config solarizes.
    """
    unknown = set(values) - set(CONTROL_NAMES)
    if unknown:
        raise ValueError(f"unknown controls {sorted(unknown)}; the explorers have {list(CONTROL_NAMES)}")
    height, width = image_size or (aug.size, aug.size)
    p = AugmentationParams.identity(1)
    box = crop_box(values.get("crop_scale", 1.0), values.get("crop_ratio", 1.0), values.get("crop_top", 0.0),
                   values.get("crop_left", 0.0), width / height)
    p.crop[0] = torch.tensor(box)
    p.flip[0] = bool(values.get("flip", False))
    factors = {name: float(values.get(name, 1.0)) for name in JITTER_OPS[:3]}
    hue = float(values.get("hue", 0.0))
    if hue != 0.0 or any(f != 1.0 for f in factors.values()):
        p.jitter[0] = True
        p.order[0] = torch.tensor(tuple(values.get("order", (0, 1, 2, 3))))
        for name, factor in factors.items():
            getattr(p, name)[0] = factor
        p.hue[0] = hue
    p.grayscale[0] = bool(values.get("grayscale", False))
    sigma = float(values.get("sigma", 0.0))
    if aug.has_blur and sigma > 0:
        p.blur[0], p.sigma[0] = True, sigma
    p.solarize[0] = aug.has_solarize and bool(values.get("solarize", False))
    return p


# ============================================================================================
# A 2-D map of an embedding space
# ============================================================================================
class PCAMap:
    """The plane of the two main principal components of L2-normalised embeddings.

    Fitted once on a cloud (N, D) (torch.linalg.svd of the centred cloud); afterwards placing
    points on the map is one product: ``pca(e)`` maps (M, D) -> (M, 2) numpy. Embeddings are
    normalised first, because every number the explorers report is a cosine. ``explained``: the
    fraction of the cloud's variance along each axis (how much of the space the map shows).
    """

    def __init__(self, embeddings: torch.Tensor):
        x = F.normalize(embeddings.detach().float().cpu(), dim=1)
        self.mean = x.mean(dim=0)
        _, s, vh = torch.linalg.svd(x - self.mean, full_matrices=False)
        components = torch.zeros(2, x.shape[1])
        k = min(2, vh.shape[0])
        components[:k] = vh[:k]
        # a fixed sign per axis (its largest entry positive): the same cloud gives the same map
        largest = components.gather(1, components.abs().argmax(dim=1, keepdim=True))[:, 0]
        self.components = components * torch.where(largest < 0, -1.0, 1.0)[:, None]
        variance = s.square()
        explained = (variance[:k] / variance.sum().clamp_min(1e-12)).tolist()
        self.explained = explained + [0.0] * (2 - k)

    def __call__(self, embeddings: torch.Tensor) -> np.ndarray:
        x = F.normalize(embeddings.detach().float().cpu().reshape(-1, self.mean.numel()), dim=1)
        return ((x - self.mean) @ self.components.T).numpy()


# ============================================================================================
# Explorers
# ============================================================================================
class _Explorer:
    """What every explorer shares: controls, update = compute + render, holding updates, the widget.

    Subclasses define ``compute()`` (a dict; pure given the control values) and ``figure(result)``
    (a matplotlib Figure), finish their own setup, then call ``self.update()``.
    """

    dpi = 80  # PNG resolution of the live figure: small enough to redraw in a blink

    def __init__(self, images, aug: AugmentationConfig, image: int = 0, continuous_update: bool = False):
        import ipywidgets as widgets

        self.images = _as_images(images)
        self.aug = aug
        self.controls = augmentation_controls(aug, len(self.images), continuous_update)
        self._identity = {name: w.value for name, w in self.controls.items() if name != "image"}
        self.controls["image"].value = image
        self.output = widgets.Output()
        self.readout = widgets.HTML()        # the numbers of the figure, as text (copyable, searchable)
        self.result: Optional[dict] = None
        self.png: Optional[bytes] = None     # the last rendered figure
        self.timings: list[float] = []       # seconds per update (compute + render)
        self._held = False
        reset = widgets.Button(description="reset to identity")
        reset.on_click(lambda _: self.reset())
        columns = [widgets.VBox([self.controls[n] for n in column if n in self.controls])
                   for column in CONTROL_COLUMNS]
        columns[-1].children += (reset,)
        self.widget = widgets.VBox([widgets.HBox(columns), self.output, self.readout])
        self.widget.add_class("equimod-explorer")
        self.output.add_class("equimod-figure")
        self.readout.add_class("equimod-readout")
        for name, control in self.controls.items():
            control.add_class(f"equimod-control-{name}")
            control.observe(self._on_change, names="value")

    # ---- reading and setting the controls ----------------------------------------------------
    def values(self) -> dict:
        """name -> current value of every control."""
        return {name: w.value for name, w in self.controls.items()}

    @property
    def image_index(self) -> int:
        return int(self.controls["image"].value)

    def params(self) -> AugmentationParams:
        """The augmentation (one row) the controls describe (see params_from_values)."""
        return params_from_values({k: v for k, v in self.values().items() if k != "image"}, self.aug,
                                  tuple(self.images.shape[-2:]))

    @contextmanager
    def hold(self):
        """Move several controls without an update for each: ``with ex.hold(): ...``; one update after."""
        self._held = True
        try:
            yield self
        finally:
            self._held = False
        self.update()

    def set(self, **values) -> dict:
        """Set controls by name (e.g. ``set(hue=0.3, flip=True)``) with a single update; returns the result."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"unknown controls {sorted(unknown)}; this explorer has {list(self.controls)}")
        with self.hold():
            for name, value in values.items():
                self.controls[name].value = tuple(value) if name == "order" else value
        return self.result

    def reset(self) -> dict:
        """Every augmentation control back to identity (the image stays)."""
        return self.set(**self._identity)

    # ---- update = compute + render ----------------------------------------------------------
    def _on_change(self, change) -> None:
        if self._held:
            return
        try:
            self.update()
        except Exception:  # a callback's error would vanish into the browser console: show it
            if not in_notebook():
                raise
            import traceback
            with self.output:
                traceback.print_exc()

    def update(self) -> dict:
        """Recompute from the controls and redraw; records the time it took in ``timings``."""
        tic = time.perf_counter()
        self.result = self.compute()
        self.render()
        self.timings.append(time.perf_counter() - tic)
        return self.result

    def render(self) -> None:
        """Draw the current result into ``self.output`` (stored as PNG bytes in ``self.png``) and
        write its numbers into ``self.readout``."""
        self.png = _png(self.figure(self.result), self.dpi)
        self.readout.value = self.readout_html(self.result)
        _show(self.output, self.png)

    def compute(self) -> dict:
        raise NotImplementedError

    def figure(self, result: Optional[dict] = None):
        raise NotImplementedError

    def readout_html(self, result: Optional[dict] = None) -> str:
        """The result's numbers as a small HTML fragment (shown under the figure)."""
        raise NotImplementedError

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)


class AugmentationExplorer(_Explorer):
    """Set an augmentation by hand; see the view it makes and the vector t the predictor reads.

    images: (N, 3, H, W) uint8 (or an ImageDataset); aug: the AugmentationConfig (slider ranges,
    output size, encoding). ``compute()`` returns {"params": AugmentationParams (1 row),
    "original": (3, H, W) uint8, "augmented": (3, S, S) float in [0, 1] (``augment.apply``),
    "encoded": (P,) ``aug.encode(params)``, "names": its column names, "description": a line}.

        ex = AugmentationExplorer(images[:16], AugmentationConfig.synthetic())
        ex.widget                       # in a notebook cell
        ex.set(hue=0.25)["encoded"]     # the same from code
    """

    def __init__(self, images, aug: AugmentationConfig, image: int = 0, continuous_update: bool = False):
        super().__init__(images, aug, image, continuous_update)
        self.names = column_names(aug)
        self.update()

    def compute(self) -> dict:
        params = self.params()
        original = self.images[self.image_index]
        view = apply(original[None], params, self.aug, normalize=False)[0]
        return {"params": params, "original": original, "augmented": view, "encoded": self.aug.encode(params)[0],
                "names": self.names, "description": describe_params(params)}

    def figure(self, result: Optional[dict] = None):
        from matplotlib.figure import Figure

        r = result or self.result
        fig = Figure(figsize=(10, 3.1))
        grid = fig.add_gridspec(1, 3, width_ratios=(1, 1, 2.8), left=0.02, right=0.99, bottom=0.3, top=0.82,
                                wspace=0.15)
        for k, (image, title) in enumerate(((r["original"], f"original x_o (image {self.image_index})"),
                                            (r["augmented"], _wrap(r["description"], 30)))):
            ax = fig.add_subplot(grid[0, k])
            ax.imshow(to_numpy_image(image))
            ax.set_title(title, fontsize=7)
            ax.axis("off")
        ax = fig.add_subplot(grid[0, 2])
        encoded = r["encoded"].cpu().numpy()
        ax.bar(np.arange(len(encoded)), encoded, color=np.where(encoded >= 0, "tab:red", "tab:blue"))
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_ylim(min(-3.0, encoded.min() - 0.3), max(3.0, encoded.max() + 0.3))
        ax.set_xticks(np.arange(len(encoded)), r["names"], rotation=90, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title("encoded t = aug.encode(params): standardised, what the predictor reads", fontsize=8)
        return fig

    def readout_html(self, result: Optional[dict] = None) -> str:
        """The view's parameters in words and t, one "name value" per column."""
        r = result or self.result
        t = " ".join(f'<span data-name="{html.escape(n)}">{html.escape(n)}&nbsp;{v:+.2f}</span>'
                     for n, v in zip(r["names"], r["encoded"].tolist()))
        return (f'<div class="equimod-params"><b>view:</b> {html.escape(r["description"])}</div>'
                f'<div class="equimod-t" style="font-family: monospace; font-size: 11px"><b>t:</b> {t}</div>')


@dataclass
class _ModelView:
    """One model of a DisplacementExplorer: how it embeds and predicts, its map, its caches."""

    name: str
    embed: Callable[[torch.Tensor], torch.Tensor]    # normalised images (n, 3, S, S) -> (n, D)
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (y_o (n, D), t (n, P)) -> (n, D)
    space: str                                        # a label: "y (model.predict)", "h (post-hoc)"...
    device: torch.device
    map: Optional[PCAMap] = None
    cloud: Optional[np.ndarray] = None                # (R, 2) the reference views on the map
    cache: Optional[dict] = None                      # image index -> y_o, gallery and its map points


def _model_view(name: str, entry) -> _ModelView:
    """(model, predictor) or (model, predictor, space) -> a _ModelView (evaluate._resolve decides)."""
    model, predictor, space = (tuple(entry) + ("y",))[:3] if isinstance(entry, (tuple, list)) else (entry, None, "y")
    model.eval()
    embed, predict = _resolve(model, predictor, space)
    if isinstance(predictor, PosthocPredictor):
        label = f"{predictor.space} std., post-hoc predictor"
    elif predictor is None:
        label = "y, model.predict"
    else:
        label = f"{space}, given predictor"
    return _ModelView(name, embed, predict, label, model_device(model), cache={})


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.float()[None], b.float()[None])[0])


def _rank(query: torch.Tensor, gallery: torch.Tensor) -> int:
    """Rank of gallery row 0 by cosine to query (D,) among gallery (G+1, D): 1 = best; ties count against."""
    similarity = F.cosine_similarity(query.float()[None], gallery.float())
    return 1 + int((similarity[1:] >= similarity[0]).sum())


class DisplacementExplorer(_Explorer):
    """The centrepiece: move an augmentation, watch the embedding move and each model predict it.

    models: name -> (model, predictor) or (model, predictor, space). predictor None: the model's
    own module (``model.predict``, in y); a :class:`evaluate.PosthocPredictor`: its own standardised
    space (``predictor.embed``); any other callable (y_o, t) -> y_hat: in `space` (default "y").
    Typical: ``{"SimCLR": (simclr, fit_posthoc_predictor(simclr, images, aug)), "EquiMod": (equimod, None)}``.

    For the chosen image and the controls' augmentation t, per model:
    y_o = embed(x_o), y = embed(view), y_hat = predict(y_o, encode(t));
    cos_pred = cos(y, y_hat), cos_invariant = cos(y, y_o), gain = cos_pred - cos_invariant (docs/design.md);
    rank: the true view's rank (1 = best) by cosine to y_hat among the gallery = [y] + `gallery_size`
    other views of the same image (drawn from `aug`, seed `seed + 1 + image`); rank_invariant: the
    same with y_o as the query (what an invariant model gets). Chance is about (gallery + 1) / 2.

    The map: per model a PCAMap fitted ONCE (at construction) on `reference_views` augmented views
    of `reference_images` (default: `images`), drawn grey; y_o -> y (actual displacement, solid) and
    y_o -> y_hat (predicted, dashed) are drawn on it, with the image's gallery views as blue dots.
    y_o and the gallery are cached per image and model, so a control move costs one forward of one
    image per model. ``zoom``: frame the chosen image's views rather than the whole cloud. The
    models are put in eval mode (BatchNorm with running statistics: one image at a time is fine).
    """

    def __init__(self, models: dict, images, aug: AugmentationConfig, reference_images=None,
                 gallery_size: int = 16, reference_views: int = 512, seed: int = 0, zoom: bool = True,
                 image: int = 0, continuous_update: bool = False):
        if not models:
            raise ValueError("models must name at least one (model, predictor) pair")
        if gallery_size < 1 or reference_views < 2:
            raise ValueError(f"need gallery_size >= 1 and reference_views >= 2, got {gallery_size}, {reference_views}")
        super().__init__(images, aug, image, continuous_update)
        self.gallery_size, self.seed, self.zoom = gallery_size, seed, zoom
        self.models = {name: _model_view(name, entry) for name, entry in models.items()}
        self.fit_count = 0  # PCA fits so far: one per model, at construction
        reference = self.images if reference_images is None else _as_images(reference_images)
        self._fit_maps(reference, reference_views)
        self.update()

    @torch.no_grad()
    def _fit_maps(self, reference: torch.Tensor, total_views: int) -> None:
        n = len(reference)
        per_image = max(1, math.ceil(total_views / n))
        generator = torch.Generator().manual_seed(self.seed)
        params = sample_views(self.aug, n, per_image, tuple(reference.shape[-2:]), generator)
        rows = torch.arange(n).repeat_interleave(per_image)
        for m in self.models.values():
            cloud = _embed_augmented(reference.to(m.device), rows.to(m.device), params.to(m.device), self.aug,
                                     m.embed, 256)
            m.map = PCAMap(cloud)
            m.cloud = m.map(cloud)
            self.fit_count += 1

    @torch.no_grad()
    def _cached(self, m: _ModelView, index: int) -> dict:
        """y_o (D,), the gallery (G, D) of the image's other views and their map points, computed once."""
        if index not in m.cache:
            image = self.images[index:index + 1].to(m.device)
            generator = torch.Generator().manual_seed(self.seed + 1 + index)
            params = sample_views(self.aug, 1, self.gallery_size, tuple(image.shape[-2:]), generator)
            gallery = _embed_augmented(image, torch.zeros(self.gallery_size, dtype=torch.long, device=m.device),
                                       params.to(m.device), self.aug, m.embed, 256)
            y_o = m.embed(self.aug.original(image)).float()[0]
            m.cache[index] = {"y_o": y_o, "gallery": gallery, "gallery_map": m.map(gallery)}
        return m.cache[index]

    @torch.no_grad()
    def compute(self) -> dict:
        """{"params", "original", "augmented", "encoded", "models": name -> numbers and vectors}.

        Per model: "space", "cos_pred", "cos_invariant", "gain", "rank", "rank_invariant",
        "gallery" (its size, the true view included), "y_o", "y", "y_hat" (D,) CPU tensors, and
        "map": {"y_o", "y", "y_hat": (2,), "gallery": (G, 2)} points on the model's PCA map.
        """
        params, index = self.params(), self.image_index
        original = self.images[index]
        view = apply(original[None], params, self.aug, normalize=False)
        x, t = self.aug.normalize(view), self.aug.encode(params)
        models = {name: self._compute_one(m, index, x, t) for name, m in self.models.items()}
        return {"params": params, "original": original, "augmented": view[0], "encoded": t[0], "models": models}

    def _compute_one(self, m: _ModelView, index: int, x: torch.Tensor, t: torch.Tensor) -> dict:
        cache = self._cached(m, index)
        y_o = cache["y_o"]
        y = m.embed(x.to(m.device)).float()[0]
        y_hat = m.predict(y_o[None], t.to(m.device)).float()[0]
        cos_pred, cos_invariant = _cos(y, y_hat), _cos(y, y_o)
        gallery = torch.cat([y[None], cache["gallery"]])
        points = m.map(torch.stack([y_o, y, y_hat]))
        return {"space": m.space, "cos_pred": cos_pred, "cos_invariant": cos_invariant,
                "gain": cos_pred - cos_invariant, "rank": _rank(y_hat, gallery), "rank_invariant": _rank(y_o, gallery),
                "gallery": len(gallery), "y_o": y_o.cpu(), "y": y.cpu(), "y_hat": y_hat.cpu(),
                "map": {"y_o": points[0], "y": points[1], "y_hat": points[2], "gallery": cache["gallery_map"]}}

    def figure(self, result: Optional[dict] = None):
        from matplotlib.figure import Figure

        r = result or self.result
        n = len(r["models"])
        fig = Figure(figsize=(3.2 + 3.4 * n, 3.5))
        grid = fig.add_gridspec(2, 1 + n, width_ratios=(0.9,) + (2.0,) * n, left=0.02, right=0.98, bottom=0.08,
                                top=0.8, wspace=0.12, hspace=0.35)
        for row, (image, title) in enumerate(((r["original"], "original x_o"),
                                              (r["augmented"], "view x = t(x_o)"))):
            ax = fig.add_subplot(grid[row, 0])
            ax.imshow(to_numpy_image(image))
            ax.set_title(title, fontsize=7)
            ax.axis("off")
        for k, (name, result_k) in enumerate(r["models"].items()):
            ax = fig.add_subplot(grid[:, 1 + k])
            _draw_displacement(ax, self.models[name], result_k, self.zoom, legend=k == 0)
            ax.set_title(f"{name} ({result_k['space']})\n"
                         f"cos(y, y_hat) {result_k['cos_pred']:.3f}   cos(y, y_o) {result_k['cos_invariant']:.3f}\n"
                         f"gain {result_k['gain']:+.3f}   rank {result_k['rank']}/{result_k['gallery']} "
                         f"(y_o: {result_k['rank_invariant']})", fontsize=8)
        return fig

    def readout_html(self, result: Optional[dict] = None) -> str:
        """A table, one row per model: cos(y, y_hat), cos(y, y_o), gain, rank of the true view."""
        r = result or self.result
        head = "".join(f"<th style='padding: 0 8px'>{h}</th>" for h in
                       ("model", "cos(y, y_hat)", "cos(y, y_o)", "gain", "rank (y_hat)", "rank (y_o)"))
        rows = "".join(
            f'<tr data-model="{html.escape(name)}"><td>{html.escape(name)}</td>'
            f'<td class="cos-pred">{m["cos_pred"]:.3f}</td><td class="cos-invariant">{m["cos_invariant"]:.3f}</td>'
            f'<td class="gain">{m["gain"]:+.3f}</td><td class="rank">{m["rank"]}/{m["gallery"]}</td>'
            f'<td class="rank-invariant">{m["rank_invariant"]}/{m["gallery"]}</td></tr>'
            for name, m in r["models"].items())
        return (f'<div class="equimod-params"><b>view:</b> {html.escape(describe_params(r["params"]))}</div>'
                f'<table class="equimod-numbers" style="text-align: right"><tr>{head}</tr>{rows}</table>')


def _draw_displacement(ax, m: _ModelView, r: dict, zoom: bool, legend: bool) -> None:
    """A model's map: reference cloud (grey), the image's gallery views, y_o -> y and y_o -> y_hat arrows."""
    points = r["map"]
    ax.scatter(m.cloud[:, 0], m.cloud[:, 1], s=3, c="0.85", linewidths=0, label="reference views")
    ax.scatter(points["gallery"][:, 0], points["gallery"][:, 1], s=12, c="tab:blue", alpha=0.3, linewidths=0,
               label="other views (gallery)")
    for target, style in (("y", dict(color="tab:blue", linestyle="-")),
                          ("y_hat", dict(color="tab:orange", linestyle="--"))):
        ax.annotate("", xy=points[target], xytext=points["y_o"],
                    arrowprops=dict(arrowstyle="->", linewidth=1.6, shrinkA=0, shrinkB=0, **style))
    ax.scatter(*points["y_o"], s=40, c="black", zorder=3, label="y_o (original)")
    ax.scatter(*points["y"], s=40, c="tab:blue", zorder=3, label="y (actual view)")
    ax.scatter(*points["y_hat"], s=50, c="tab:orange", marker="X", zorder=3, label="y_hat (predicted)")
    if zoom:
        framed = np.vstack([points["gallery"], np.stack([points["y_o"], points["y"], points["y_hat"]])])
        low, high = framed.min(axis=0), framed.max(axis=0)
        pad = 0.15 * np.maximum(high - low, 1e-3)
        ax.set_xlim(low[0] - pad[0], high[0] + pad[0])
        ax.set_ylim(low[1] - pad[1], high[1] + pad[1])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"PC1 ({m.map.explained[0]:.0%} of the reference cloud)", fontsize=7)
    ax.set_ylabel(f"PC2 ({m.map.explained[1]:.0%})", fontsize=7)
    if legend:
        ax.legend(fontsize=6, loc="best", framealpha=0.7)


# ============================================================================================
# Sweeps: one augmentation from identity to its strongest
# ============================================================================================
#: The augmentations a sweep can vary (as evaluate.ONE_AUGMENTATION_FIELDS).
SWEEP_GROUPS = ("crop", "flip", "brightness", "contrast", "saturation", "hue", "grayscale", "blur", "solarize")


@dataclass
class Sweep:
    """One augmentation at `steps` strengths, everything else identity.

    values (S,): the parameter (crop scale, factor, hue turns, sigma, or 0/1 for on/off);
    fraction (S,): the strength relative to the config's maximum, signed for two-sided ones
    (brightness 1 - b .. 1 + b is -1 .. 1; identity is 0); params: S rows; label: for an axis.
    """

    group: str
    values: np.ndarray
    fraction: np.ndarray
    params: AugmentationParams
    label: str


def sweep_params(aug: AugmentationConfig, group: str, steps: int = 9,
                 image_size: Optional[tuple[int, int]] = None) -> Sweep:
    """Parameters that vary one augmentation over the config's range (on/off ones: 2 steps).

    crop: a centred square box of area 1 .. crop_scale min; flip, grayscale, solarize: off, on;
    brightness, contrast, saturation: factor max(0, 1 - s) .. 1 + s; hue: -h .. h turns;
    blur: sigma 0 (off) .. blur_sigma max. Raises ValueError for a strength the config sets to 0.
    """
    if group not in SWEEP_GROUPS:
        raise ValueError(f"unknown augmentation {group!r}; choose one of {SWEEP_GROUPS}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    height, width = image_size or (aug.size, aug.size)
    binary = group in ("flip", "grayscale", "solarize")
    n = 2 if binary else steps
    if binary:
        if group == "solarize" and not aug.has_solarize:
            raise ValueError("this config never solarizes (solarize_p = 0): nothing to sweep")
        values, fraction, label = np.array([0.0, 1.0]), np.array([0.0, 1.0]), f"{group} (off, on)"
    elif group == "crop":
        low = aug.crop_scale[0]
        if low >= 1:
            raise ValueError("crop_scale min is 1: nothing to sweep")
        values = np.linspace(1.0, low, n)
        fraction, label = (1 - values) / (1 - low), "crop scale (area fraction)"
    elif group == "blur":
        if not aug.has_blur:
            raise ValueError("this config never blurs (blur_p = 0): nothing to sweep")
        values = np.linspace(0.0, aug.blur_sigma[1], n)
        fraction, label = values / aug.blur_sigma[1], "blur sigma (pixels)"
    else:
        strength = getattr(aug, group)
        if strength <= 0:
            raise ValueError(f"aug.{group} is 0: nothing to sweep")
        centre = 0.0 if group == "hue" else 1.0  # identity: no shift, factor 1
        values = centre + strength * np.linspace(-1.0, 1.0, n)  # the middle step is exactly identity
        if group != "hue":
            values = np.maximum(values, 0.0)  # a factor cannot go below 0
        fraction, label = (values - centre) / strength, f"{group} ({'turns' if group == 'hue' else 'factor'})"
    rows = []
    for value in values:
        if group == "crop":  # a centred square box
            _, _, h, w = crop_box(value, 1.0, 0.0, 0.0, width / height)
            v = {"crop_scale": value, "crop_top": (1 - h) / 2, "crop_left": (1 - w) / 2}
        elif group == "blur":
            v = {"sigma": value}
        else:
            v = {group: bool(value) if binary else value}
        rows.append(params_from_values(v, aug, (height, width)))
    return Sweep(group, values, fraction, AugmentationParams.cat(rows), label)


def _one_image(image) -> torch.Tensor:
    """(1, 3, H, W) on the CPU from (3, H, W) or (1, 3, H, W)."""
    image = _as_images(image)
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
    embed, predict = _resolve(model, predictor, space)
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
    cloud = _embed_augmented(image.to(device), torch.zeros(cloud_views, dtype=torch.long, device=device),
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
    between them is the gain. Arguments as :func:`sweep_data`.
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


# ---- invariance: how far does each augmentation move the embedding? -------------------------
def _spaces(model, spaces: Optional[Sequence[str]]) -> tuple[str, ...]:
    return tuple(spaces) if spaces is not None else ("h", "y") if model.cfg.equimod else ("h", "z")


@torch.no_grad()
def invariance_distances(model, images, aug: AugmentationConfig, groups: Optional[Sequence[str]] = None,
                         steps: int = 9, spaces: Optional[Sequence[str]] = None, centre: bool = True,
                         batch_size: int = 256) -> dict:
    """Mean embedding distance 1 - cos(e(view), e(x_o)) over images, per augmentation and strength.

    images: (N, 3, H, W) uint8; groups: augmentations (default: the ones the config uses,
    evaluate.one_at_a_time_groups); spaces: default ("h", "y") with the module, else ("h", "z").
    centre: measure cosines around the mean embedding of the originals (as the post-hoc predictor
    does: h follows a ReLU, so raw cosines between any two h are high); needs N >= 2.
    Returns {"fraction": {group: (S,)}, "values": {group: (S,)}, "distance": {space: {group: (S,)}}}.
    """
    model.eval()
    images = _as_images(images)
    if centre and len(images) < 2:
        raise ValueError("centre=True needs at least 2 images (their mean is the centre); or pass centre=False")
    device = model_device(model)
    spaces, groups = _spaces(model, spaces), list(groups or one_at_a_time_groups(aug))
    embeds = {space: _embedding(model, space) for space in spaces}
    images = images.to(device)
    originals = {space: _batched_embed(embed, aug.original(images), batch_size) for space, embed in embeds.items()}
    centres = {space: e.mean(dim=0) if centre else torch.zeros_like(e[0]) for space, e in originals.items()}
    out = {"fraction": {}, "values": {}, "distance": {space: {} for space in spaces}}
    for group in groups:
        sweep = sweep_params(aug, group, steps, tuple(images.shape[-2:]))
        s = len(sweep.values)
        rows = torch.arange(len(images), device=device).repeat_interleave(s)          # row i*S + k
        params = sweep.params[torch.arange(s).repeat(len(images))].to(device)
        out["fraction"][group], out["values"][group] = sweep.fraction, sweep.values
        for space, embed in embeds.items():
            e = _embed_augmented(images, rows, params, aug, embed, batch_size)
            c = centres[space]
            cos = F.cosine_similarity(e - c, originals[space][rows] - c)
            out["distance"][space][group] = (1 - cos).view(len(images), s).mean(dim=0).cpu().numpy()
    return out


def _batched_embed(embed, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([embed(chunk).float() for chunk in x.split(batch_size)])


def invariance_curves(model, images, aug: AugmentationConfig, groups: Optional[Sequence[str]] = None,
                      steps: int = 9, spaces: Optional[Sequence[str]] = None, centre: bool = True):
    """How much each augmentation moves the embedding: 1 - cos(e(view), e(x_o)) vs strength (a Figure).

    One panel per space (axes labelled by the space: "h", then "y", or "z" for a baseline), one
    line per augmentation; x is the strength as a fraction of the config's maximum (negative:
    below identity, for brightness, contrast, saturation and hue). A flat line at 0 is an
    invariant embedding. Arguments as :func:`invariance_distances`.
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
    fig.suptitle(f"Invariance per augmentation, mean over {len(_as_images(images))} images", fontsize=10)
    return fig


# ============================================================================================
# Live training curves: a Trainer callback
# ============================================================================================
class LiveCurves:
    """A training callback that draws the losses, the gain and the positive-pair top-1 while training runs
    (d2l's ProgressBoard), each loss and top-1 with its chance line (log K and 1 / K for K candidates).

        curves = LiveCurves()
        trainer = Trainer(cfg, callbacks={"on_log": [curves], "on_train_end": [curves]})
        trainer.run()      # in a notebook the curves appear under the cell and grow

    ``curves(trainer, metrics)`` records ``metrics["step"]`` and each key of `keys` (NaN when a
    record lacks it: no "equi" or "gain" for a baseline) in ``steps`` and ``history``. In a kernel
    it redraws into ``widget`` (an ipywidgets.Output, displayed on the first redraw unless
    ``auto_display=False``) at most every `min_interval_s` seconds, and always at "on_train_end";
    elsewhere it only records.
    """

    def __init__(self, keys: Sequence[str] = ("loss", "inv", "equi", "gain", "inv_top1", "equi_top1"),
                 min_interval_s: float = 0.5, auto_display: bool = True, dpi: int = 80):
        self.keys = tuple(keys)
        self.steps: list[float] = []
        self.history: dict[str, list[float]] = {key: [] for key in self.keys}
        self.chance: dict[str, float] = {}  # key -> its chance line, from the trainer's *_chance metrics
        self.min_interval_s, self.auto_display, self.dpi = min_interval_s, auto_display, dpi
        self.redraws = 0
        self._output = None
        self._displayed = False
        self._last_redraw = -math.inf

    @property
    def widget(self):
        """The ipywidgets.Output the curves are drawn into."""
        if self._output is None:
            import ipywidgets as widgets
            self._output = widgets.Output()
        return self._output

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)
        self._displayed = True

    def __call__(self, trainer, metrics: dict) -> None:
        if "stop_reason" in metrics:  # on_train_end: draw whatever the throttle held back
            self.redraw()
            return
        self.steps.append(float(metrics.get("step", len(self.steps) + 1)))
        for key in self.keys:
            self.history[key].append(float(metrics[key]) if key in metrics else math.nan)
        for part in ("inv", "equi"):  # log(K) for the loss, 1 / K for the positive-pair top-1
            if f"{part}_chance" in metrics:
                self.chance[part] = float(metrics[f"{part}_chance"])
                self.chance[f"{part}_top1"] = math.exp(-self.chance[part])
        if time.perf_counter() - self._last_redraw >= self.min_interval_s:
            self.redraw()

    def redraw(self) -> None:
        """Draw the curves into the widget (in a kernel; a no-op elsewhere)."""
        if not in_notebook():
            return
        if self.auto_display and not self._displayed:
            self._ipython_display_()
        _show(self.widget, _png(self.figure(), self.dpi))
        self._last_redraw = time.perf_counter()
        self.redraws += 1

    def figure(self):
        """One panel per key that has a finite value, the value against the step (a Figure)."""
        from matplotlib.figure import Figure

        keys = [k for k in self.keys if any(math.isfinite(v) for v in self.history[k])] or list(self.keys[:1])
        columns = min(len(keys), 4)
        rows = math.ceil(len(keys) / columns)
        fig = Figure(figsize=(2.6 * columns, 2.4 * rows), layout="constrained")
        for k, key in enumerate(keys):
            ax = fig.add_subplot(rows, columns, k + 1, label=key)
            ax.plot(self.steps, self.history[key], color=f"C{k}")
            if key in self.chance:  # a loss on this line, or a top-1 on this one, has learned nothing
                ax.axhline(self.chance[key], color="grey", linestyle="--", linewidth=0.8, label="chance")
                ax.legend(fontsize=6, loc="best")
            ax.set_title(key + {"gain": " = cos(y, y_hat) - cos(y, y_o)",
                                "inv_top1": ": partner nearest", "equi_top1": ": own prediction nearest"}.get(key, ""),
                         fontsize=8)
            ax.set_xlabel("step", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        return fig
