"""ipywidgets explorers and live training curves.

Core ipywidgets + matplotlib, for ``%matplotlib inline`` in JupyterLab, Notebook and Colab.

    AugmentationExplorer(images, aug).widget              # sliders -> t, the view, encode(t)
    DisplacementExplorer({"SimCLR": Panel(simclr, posthoc), "EquiMod": Panel(equimod)}, images, aug).widget
    training_marks(aug)                                   # name -> its "trained: 0.60–1.40" mark (HTML)

Every explorer is a small class: ``controls`` (name -> widget, one per augmentation),
``params()`` (the AugmentationParams the controls describe), ``compute()`` (a dict of numbers and
arrays: pure, testable without a browser), ``render()`` (a matplotlib figure into an
``ipywidgets.Output``, and the numbers as text into ``readout``, an ``ipywidgets.HTML``) and
``widget`` (the box to display). Moving a control calls ``update()`` = compute + render.
``explorer.set(hue=0.3, flip=True)`` moves several controls with one update. Next to each control a
mark says what training drew (``recipes.training_range``), red once the value leaves it, and the
readout lists such values ("outside the training range: hue +0.19 (trained ±0.10)"). In the page,
every part carries a CSS class (``equimod-explorer``, ``equimod-control-<name>``, ``equimod-trained``,
``equimod-figure``, ``equimod-readout``, ``equimod-outside``): the browser test finds them by it, and
a teacher can restyle them.
"""

from __future__ import annotations

import html
import math
import textwrap
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .augment import AugmentationConfig, AugmentationParams, apply
from .dataset import as_images
from .equivariance import Panel, embed_augmented
from .figures import PCAMap, to_numpy_image
from .models import cosine, model_device
from .notebook import in_notebook, png_bytes, show_png
from .recipes import (
    CONTROL_COLUMNS,
    CONTROL_NAMES,
    CONTROL_OWNERS,
    JITTER_ORDERS,
    describe_params,
    outside_training_range,
    params_from_values,
    sample_views,
    training_range,
)


# ============================================================================================
# Controls: one widget per augmentation
# ============================================================================================
def augmentation_controls(aug: AugmentationConfig, n_images: int = 1, continuous_update: bool = False) -> dict:
    """Widgets, one per augmentation of `aug` (plus the image index), all at identity values.

    image: IntSlider over the images; crop_scale (area fraction, the config's minimum .. 1),
    crop_ratio (width / height, the config's range, 1 included), crop_top and crop_left
    (fractions, clamped so the box fits, see recipes.slider_crop_box); flip; brightness, contrast, saturation
    (factors over the config's range [1 - s, 1 + s], or [0.6, 1.4] where the config leaves one at 0);
    hue (turns, -0.5 .. 0.5: the whole colour circle, beyond the config's +-h); order (the jitter
    order); grayscale; sigma (blur std in pixels, 0 = no blur) if the config blurs; solarize if it
    solarizes. ``continuous_update=False`` updates when a slider is released, which keeps slow
    front ends (Colab) from queueing work while dragging. What training drew for each control is
    ``training_marks(aug)`` (the explorers show each mark next to its control).
    """
    import ipywidgets as widgets

    style, layout = {"description_width": "90px"}, widgets.Layout(width="270px")

    def slider(description, low, high, value, step=0.01):
        return widgets.FloatSlider(value=value, min=low, max=high, step=step, description=description,
                                   readout_format=".2f", continuous_update=continuous_update, style=style,
                                   layout=layout)

    def toggle(description):
        return widgets.Checkbox(value=False, description=description, indent=False,
                                layout=widgets.Layout(width="120px"))

    controls = {}
    for name in CONTROL_NAMES:  # the augmentations' controls from their records (recipes.AUGMENTATION_TABLE)
        if name == "image":
            controls[name] = widgets.IntSlider(value=0, min=0, max=max(n_images - 1, 0), description="image",
                                               continuous_update=continuous_update, style=style, layout=layout)
        elif name == "order":
            controls[name] = widgets.Dropdown(options=[(" ".join("BCSH"[i] for i in order), order)
                                                       for order in JITTER_ORDERS],
                                              value=(0, 1, 2, 3), description="jitter order", style=style,
                                              layout=layout)
        elif CONTROL_OWNERS[name].present(aug):
            owner = CONTROL_OWNERS[name]
            if owner.switch:
                controls[name] = toggle(name)
            else:
                label, low, high, step = owner.slider(aug, name)
                controls[name] = slider(label, low, high, owner.identity[name], step=step)
    return controls

def training_marks(aug: AugmentationConfig) -> dict:
    """Control name -> a small ipywidgets.HTML (class ``equimod-trained``): the range training drew it from.

    One per control of ``augmentation_controls`` but the image, e.g. "trained: 0.60–1.40"
    (``recipes.training_range``; the jitter order: all 24). The explorers show each next to its control.
    """
    import ipywidgets as widgets

    names = [n for n in CONTROL_NAMES if n == "order" or (n != "image" and CONTROL_OWNERS[n].present(aug))]
    marks = {}
    for name in names:
        marks[name] = widgets.HTML(_mark_html(aug, name, None), layout=widgets.Layout(width="110px"))
        marks[name].add_class("equimod-trained")
    return marks

def _mark_html(aug: AugmentationConfig, name: str, value) -> str:
    """A mark's HTML: grey while `value` (None: identity) is in the training range, red with a "!" once it leaves it."""
    if name == "order":  # every order is drawn whenever the jitter is
        text, outside = ("trained: all 24" if aug.jitter_p > 0 else "trained: 0 1 2 3 only"), False
    else:
        trained = training_range(aug, name)
        text, outside = trained.text, value is not None and not trained.contains(value)
    colour, flag = ("#b00020", " !") if outside else ("#777", "")
    return f'<span style="font-size: 10px; color: {colour}">{html.escape(text)}{flag}</span>'

def _outside_html(outside: list) -> str:
    """The readout's warning line, or "" when every control is within the training range."""
    if not outside:
        return ""
    return (f'<div class="equimod-outside" style="color: #b00020"><b>outside the training range:</b> '
            f'{html.escape(", ".join(outside))}</div>')

def _is_integer(value) -> bool:
    """Whether `value` is a Python or numpy integer (not a bool: True is no index)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

def check_control_value(control, name: str, value):
    """`value` as the control holds it (numpy scalars become bool, int or float, an order a tuple of ints).

    Raises ValueError naming the control and what it takes unless the control can show the value as it
    is: sliders would clamp or truncate it silently, and a checkbox refuses numpy's bool.
    """
    import ipywidgets

    if isinstance(control, ipywidgets.Checkbox):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} is on/off: pass True or False, got {value!r}")
        return bool(value)
    if isinstance(control, ipywidgets.Dropdown):
        options = [option for _, option in control.options]
        order = value.tolist() if isinstance(value, (np.ndarray, torch.Tensor)) else value
        order = tuple(order) if isinstance(order, (tuple, list)) and all(map(_is_integer, order)) else None
        if order not in options:
            raise ValueError(f"{name} must be one of the 24 orders of (0, 1, 2, 3), a tuple such as (3, 0, 1, 2); "
                             f"got {value!r}")
        return tuple(int(i) for i in order)
    if isinstance(control, ipywidgets.IntSlider):  # the image index
        if not _is_integer(value):
            raise ValueError(f"{name} is an index: pass an integer from {control.min} to {control.max}, "
                             f"got {value!r}")
        if not control.min <= value <= control.max:
            raise ValueError(f"{name} must be an index from {control.min} to {control.max} "
                             f"({control.max + 1} images), got {value}")
        return int(value)
    is_number = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not control.min <= value <= control.max:
        raise ValueError(f"{name} = {value} is outside the slider's range [{control.min}, {control.max}]")
    return float(value)


# ============================================================================================
# Explorers
# ============================================================================================
def _some_images(images, name: str) -> torch.Tensor:
    """as_images(images), refused in one line when it holds no image."""
    images = as_images(images)
    if len(images) == 0:
        raise ValueError(f"{name} holds no image: give at least one, (N, 3, H, W) uint8 with N >= 1")
    return images

class _Explorer:
    """What every explorer shares: controls, update = compute + render, holding updates, the widget.

    Subclasses define ``compute()`` (a dict; pure given the control values) and ``figure(result)``
    (a matplotlib Figure), finish their own setup, then call ``self.update()``.
    """

    dpi = 80  # PNG resolution of the live figure: small enough to redraw in a blink

    def __init__(self, images, aug: AugmentationConfig, image: int = 0, continuous_update: bool = False):
        import ipywidgets as widgets

        self.images = _some_images(images, "images")
        self.aug = aug
        self.controls = augmentation_controls(aug, len(self.images), continuous_update)
        self.marks = training_marks(aug)     # name -> "trained: ..." next to the control
        self._identity = {name: w.value for name, w in self.controls.items() if name != "image"}
        self.controls["image"].value = check_control_value(self.controls["image"], "image", image)
        self.output = widgets.Output()
        self.readout = widgets.HTML()        # the numbers of the figure, as text (copyable, searchable)
        self.result: Optional[dict] = None
        self.png: Optional[bytes] = None     # the last rendered figure
        self.timings: list[float] = []       # seconds per update (compute + render)
        self._held = False
        reset = widgets.Button(description="reset to identity")
        reset.on_click(lambda _: self.reset())
        columns = [widgets.VBox([widgets.HBox([self.controls[n], self.marks[n]]) if n in self.marks
                                 else self.controls[n] for n in column if n in self.controls])
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
        """Control name -> the current value of every control."""
        return {name: w.value for name, w in self.controls.items()}

    @property
    def image_index(self) -> int:
        return int(self.controls["image"].value)

    def params(self) -> AugmentationParams:
        """The augmentation (one row) the controls describe (see params_from_values)."""
        return params_from_values({k: v for k, v in self.values().items() if k != "image"}, self.aug,
                                  tuple(self.images.shape[-2:]))

    def outside(self) -> list[str]:
        """The control values training never drew, e.g. ["hue +0.19 (trained ±0.10)"].

        See ``recipes.outside_training_range``.
        """
        return outside_training_range(self.values(), self.aug)

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
        """Set controls by name (e.g. ``set(hue=0.3, flip=True)``) with a single update; returns the result.

        Every value is checked first (``check_control_value``): one refused, none moves.
        """
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"unknown controls {sorted(unknown)}; this explorer has {list(self.controls)}")
        checked = {name: check_control_value(self.controls[name], name, value) for name, value in values.items()}
        before = self.values()
        with self.hold():  # all or nothing: every value was checked before any control moves
            try:
                for name, value in checked.items():
                    self.controls[name].value = value
            except Exception:
                for name in checked:
                    self.controls[name].value = before[name]
                raise
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
        """Draw the current result into ``self.output`` and write its numbers into ``self.readout``.

        The figure is stored as PNG bytes in ``self.png``.
        """
        self.png = png_bytes(self.figure(self.result), self.dpi)
        self.readout.value = self.readout_html(self.result)
        values = self.values()
        for name, mark in self.marks.items():
            mark.value = _mark_html(self.aug, name, values[name])
        show_png(self.output, self.png)

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
    "encoded": (P,) ``aug.encode(params)``, "names": its column names, "description": a line,
    "outside": the values training never drew, as text (see ``outside()``)}.

        ex = AugmentationExplorer(images[:16], AugmentationConfig.synthetic())
        ex.widget                       # in a notebook cell
        ex.set(hue=0.25)["encoded"]     # the same from code
    """

    def __init__(self, images, aug: AugmentationConfig, image: int = 0, continuous_update: bool = False):
        super().__init__(images, aug, image, continuous_update)
        self.names = aug.column_names()
        self.update()

    def compute(self) -> dict:
        params = self.params()
        original = self.images[self.image_index]
        view = apply(original[None], params, self.aug, normalize=False)[0]
        return {"params": params, "original": original, "augmented": view, "encoded": self.aug.encode(params)[0],
                "names": self.names, "description": describe_params(params), "outside": self.outside()}

    def figure(self, result: Optional[dict] = None):
        from matplotlib.figure import Figure

        r = result or self.result
        fig = Figure(figsize=(10, 3.1))
        grid = fig.add_gridspec(1, 3, width_ratios=(1, 1, 2.8), left=0.02, right=0.99, bottom=0.3, top=0.82,
                                wspace=0.15)
        for k, (image, title) in enumerate(((r["original"], f"original x_o (image {self.image_index})"),
                                            (r["augmented"], textwrap.fill(r["description"], 30)))):
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
                + _outside_html(r.get("outside", []))
                + f'<div class="equimod-t" style="font-family: monospace; font-size: 11px"><b>t:</b> {t}</div>')

@dataclass
class _ModelView:
    """One model of a DisplacementExplorer: how it embeds and predicts, its map, its caches."""

    name: str
    embed: Callable[[torch.Tensor], torch.Tensor]    # normalised images (n, 3, S, S) -> (n, D)
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (y_o (n, D), t (n, P)) -> (n, D)
    space: str                                        # a label: "y, the model's own module", ...
    device: torch.device
    map: Optional[PCAMap] = None
    cloud: Optional[np.ndarray] = None                # (R, 2) the reference views on the map
    cache: Optional[dict] = None                      # image index -> y_o, gallery and its map points

def _model_view(name: str, panel) -> _ModelView:
    """A Panel (or a bare model: its own module, in y) -> a _ModelView."""
    if isinstance(panel, (tuple, list)):
        raise TypeError(f"model {name!r}: give Panel(model, predictor, space) (equimod_edu.equivariance.Panel), "
                        f"not a tuple")
    panel = panel if isinstance(panel, Panel) else Panel(panel)
    panel.model.eval()
    embed, predict = panel.scorer()
    return _ModelView(name, embed, predict, panel.label, model_device(panel.model), cache={})

def _arrow_cosine(actual: torch.Tensor, predicted: torch.Tensor, y_o: torch.Tensor) -> float:
    """cos(actual, predicted) of two displacements ``(D,)`` from y_o, or NaN when either has length ~0.

    Length ~0 is below 1e-6 |y_o|: an arrow of length 0 has no direction to compare.
    """
    floor = 1e-6 * max(float(y_o.norm()), 1e-12)
    if float(actual.norm()) <= floor or float(predicted.norm()) <= floor:
        return math.nan
    return float(cosine(actual[None], predicted[None]))

def _signed(value: float) -> str:
    """A cosine as "+0.91", or "–" for NaN (no arrow)."""
    return "–" if math.isnan(value) else f"{value:+.2f}"

def _rank(query: torch.Tensor, gallery: torch.Tensor) -> int:
    """Rank of gallery row 0 by cosine to query (D,) among gallery (G+1, D): 1 = best; ties count against."""
    similarity = F.cosine_similarity(query.float()[None], gallery.float())
    return 1 + int((similarity[1:] >= similarity[0]).sum())

#: Shown under the maps and the table when the panels live in different spaces.
_SPACES_NOTE = "different spaces: compare cosines, arrows and ranks only between panels of the same space"

def _mixed_spaces(models: dict) -> bool:
    """Whether compute()'s per-model results live in more than one embedding space."""
    return len({m["space"] for m in models.values()}) > 1

class DisplacementExplorer(_Explorer):
    """The centrepiece: move an augmentation, watch the embedding move and each model predict it.

    models: name -> ``equivariance.Panel`` (model, predictor, space), or a bare model (its own
    module, in y). predictor None: the model's own module (``model.predict``, in y); a
    ``equivariance.PosthocPredictor``: its own standardised space (``predictor.embed``); any other
    callable (y_o, t) -> y_hat: in `space` (default "y").
    Typical (notebook 5): the same post-hoc recipe on both models, so that those two panels ask the
    same question in the same space (standardised h), and EquiMod's own module as a third panel, in y:
    ``{"SimCLR + post-hoc (h)": Panel(simclr, fit_posthoc_predictor(simclr, images, aug)),
    "EquiMod + post-hoc (h)": Panel(equimod, fit_posthoc_predictor(equimod, images, aug)),
    "EquiMod's own module (y)": Panel(equimod)}``. When the models' spaces differ, the figure and the
    readout say so: cosines, arrows and ranks compare only within one space.

    For the chosen image and the controls' augmentation t, per model:
    y_o = embed(x_o), y = embed(view), y_hat = predict(y_o, encode(t));
    cos_pred = cos(y, y_hat), cos_invariant = cos(y, y_o), gain = cos_pred - cos_invariant (docs/design.md);
    dir = cos(y - y_o, y_hat - y_o), the cosine between the two arrows in the full space (1: the prediction
    moves the way the view moved; NaN when either arrow has length 0, e.g. at identity): the map's 2-D
    arrows are a projection, so read "does the orange arrow follow the blue one?" on dir;
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
            raise ValueError("models must name at least one Panel(model, predictor, space)")
        if gallery_size < 1 or reference_views < 2:
            raise ValueError(f"need gallery_size >= 1 and reference_views >= 2, got {gallery_size}, {reference_views}")
        super().__init__(images, aug, image, continuous_update)
        self.gallery_size, self.seed, self.zoom = gallery_size, seed, zoom
        self.models = {name: _model_view(name, entry) for name, entry in models.items()}
        self.fit_count = 0  # PCA fits so far: one per model, at construction
        reference = self.images if reference_images is None else _some_images(reference_images, "reference_images")
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
            cloud = embed_augmented(reference.to(m.device), rows.to(m.device), params.to(m.device), self.aug,
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
            gallery = embed_augmented(image, torch.zeros(self.gallery_size, dtype=torch.long, device=m.device),
                                       params.to(m.device), self.aug, m.embed, 256)
            y_o = m.embed(self.aug.original(image)).float()[0]
            m.cache[index] = {"y_o": y_o, "gallery": gallery, "gallery_map": m.map(gallery)}
        return m.cache[index]

    @torch.no_grad()
    def compute(self) -> dict:
        """{"params", "original", "augmented", "encoded", "outside", "models": name -> numbers and vectors}.

        Per model: "space", "cos_pred", "cos_invariant", "gain", "dir", "rank", "rank_invariant",
        "gallery" (its size, the true view included), "y_o", "y", "y_hat" (D,) CPU tensors, and
        "map": {"y_o", "y", "y_hat": (2,), "gallery": (G, 2)} points on the model's PCA map.
        """
        params, index = self.params(), self.image_index
        original = self.images[index]
        view = apply(original[None], params, self.aug, normalize=False)
        x, t = self.aug.normalize(view), self.aug.encode(params)
        models = {name: self._compute_one(m, index, x, t) for name, m in self.models.items()}
        return {"params": params, "original": original, "augmented": view[0], "encoded": t[0],
                "outside": self.outside(), "models": models}

    def _compute_one(self, m: _ModelView, index: int, x: torch.Tensor, t: torch.Tensor) -> dict:
        cache = self._cached(m, index)
        y_o = cache["y_o"]
        y = m.embed(x.to(m.device)).float()[0]
        y_hat = m.predict(y_o[None], t.to(m.device)).float()[0]
        cos_pred, cos_invariant = float(cosine(y[None], y_hat[None])), float(cosine(y[None], y_o[None]))
        gallery = torch.cat([y[None], cache["gallery"]])
        points = m.map(torch.stack([y_o, y, y_hat]))
        return {"space": m.space, "cos_pred": cos_pred, "cos_invariant": cos_invariant,
                "gain": cos_pred - cos_invariant, "dir": _arrow_cosine(y - y_o, y_hat - y_o, y_o),
                "rank": _rank(y_hat, gallery), "rank_invariant": _rank(y_o, gallery),
                "gallery": len(gallery), "y_o": y_o.cpu(), "y": y.cpu(), "y_hat": y_hat.cpu(),
                "map": {"y_o": points[0], "y": points[1], "y_hat": points[2], "gallery": cache["gallery_map"]}}

    def figure(self, result: Optional[dict] = None):
        from matplotlib.figure import Figure

        r = result or self.result
        n = len(r["models"])
        fig = Figure(figsize=(3.2 + 3.4 * n, 3.9))
        grid = fig.add_gridspec(2, 1 + n, width_ratios=(0.9,) + (2.0,) * n, left=0.02, right=0.98, bottom=0.07,
                                top=0.74, wspace=0.12, hspace=0.35)
        for row, (image, title) in enumerate(((r["original"], "original x_o"),
                                              (r["augmented"], "view x = t(x_o)"))):
            ax = fig.add_subplot(grid[row, 0])
            ax.imshow(to_numpy_image(image))
            ax.set_title(title, fontsize=7)
            ax.axis("off")
        first_space = next(iter(r["models"].values()))["space"]
        for k, (name, result_k) in enumerate(r["models"].items()):
            ax = fig.add_subplot(grid[:, 1 + k])
            _draw_displacement(ax, self.models[name], result_k, self.zoom, legend=k == 0)
            if result_k["space"] != first_space:  # another space: tinted, so it does not read as comparable
                ax.set_facecolor("#f4eefa")
            ax.set_title(f"{name}\nspace: {result_k['space']}\n"
                         f"cos(y, y_hat) {result_k['cos_pred']:.3f}   cos(y, y_o) {result_k['cos_invariant']:.3f}\n"
                         f"gain {result_k['gain']:+.3f}   dir {_signed(result_k['dir'])}   "
                         f"rank {result_k['rank']}/{result_k['gallery']} "
                         f"(y_o: {result_k['rank_invariant']})", fontsize=8)
        if _mixed_spaces(r["models"]):
            fig.text(0.5, 0.985, _SPACES_NOTE + " (tinted: another space)", ha="center", va="top", fontsize=8)
        if r.get("outside"):
            fig.text(0.5, 0.94, "outside the training range: " + ", ".join(r["outside"]), ha="center", va="top",
                     fontsize=8, color="#b00020")
        return fig

    def readout_html(self, result: Optional[dict] = None) -> str:
        """The readout: an HTML table, one row per model.

        Columns: cos(y, y_hat), cos(y, y_o), gain, dir (the arrows' cosine; "–" when an arrow has
        length 0), ranks, the space; above it the view and any value outside the training range;
        under it a note when the spaces differ.
        """
        r = result or self.result
        head = "".join(f"<th style='padding: 0 8px'>{h}</th>" for h in
                       ("model", "cos(y, y_hat)", "cos(y, y_o)", "gain", "dir", "rank (y_hat)", "rank (y_o)", "space"))
        rows = "".join(
            f'<tr data-model="{html.escape(name)}"><td>{html.escape(name)}</td>'
            f'<td class="cos-pred">{m["cos_pred"]:.3f}</td><td class="cos-invariant">{m["cos_invariant"]:.3f}</td>'
            f'<td class="gain">{m["gain"]:+.3f}</td><td class="dir">{_signed(m["dir"])}</td>'
            f'<td class="rank">{m["rank"]}/{m["gallery"]}</td>'
            f'<td class="rank-invariant">{m["rank_invariant"]}/{m["gallery"]}</td>'
            f'<td class="space" style="text-align: left; padding-left: 8px">{html.escape(m["space"])}</td></tr>'
            for name, m in r["models"].items())
        note = (f'<div class="equimod-spaces" style="font-size: 11px">{_SPACES_NOTE}</div>'
                if _mixed_spaces(r["models"]) else "")
        return (f'<div class="equimod-params"><b>view:</b> {html.escape(describe_params(r["params"]))}</div>'
                + _outside_html(r.get("outside", []))
                + f'<table class="equimod-numbers" style="text-align: right"><tr>{head}</tr>{rows}</table>' + note)

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
