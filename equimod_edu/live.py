"""Live training curves: a Trainer callback that draws the losses, the gain and the top-1 as a run trains.

    curves = LiveCurves(keys=("inv", "inv_top1"))
    Trainer(cfg, callbacks=[curves]).run()      # in a notebook the curves appear under the cell and grow

Outside a kernel it only records (``curves.steps``, ``curves.history``), so it is testable headless.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

from .notebook import in_notebook, png_bytes, show_png


class LiveCurves:
    """A training callback that draws the losses, the gain and the positive-pair top-1 while training runs.

    Like d2l's ProgressBoard; each loss and top-1 with its chance line (log K and 1 / K for K candidates).

        curves = LiveCurves()
        trainer = Trainer(cfg, callbacks=[curves])   # attach: log at "on_log", end at "on_train_end"
        trainer.run()      # in a notebook the curves appear under the cell and grow

    ``curves.log(trainer, metrics)`` records ``metrics["step"]`` and each key of `keys` (NaN when a
    record lacks it: no "equi" or "gain" for a baseline) in ``steps`` and ``history``. In a kernel
    it redraws into ``widget`` (an ipywidgets.Output, displayed on the first redraw unless
    ``auto_display=False``) at most every `min_interval_s` seconds, and always at the end
    (``curves.end``); elsewhere it only records.
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

    def attach(self, trainer) -> None:
        trainer.add_callback("on_log", self.log)
        trainer.add_callback("on_train_end", self.end)

    def end(self, trainer, metrics: dict) -> None:
        """At the end of training: draw whatever the throttle held back."""
        self.redraw()

    def log(self, trainer, metrics: dict) -> None:
        """Record one log line, and redraw if the last redraw is older than min_interval_s."""
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
        show_png(self.widget, png_bytes(self.figure(), self.dpi))
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
