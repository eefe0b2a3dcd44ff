"""Live training curves: a Trainer callback that draws the losses, the gain and the top-1 as a run trains.

    curves = LiveCurves(keys=("inv", "inv_top1"))
    Trainer(cfg, callbacks=[curves]).run()      # in a notebook the curves appear under the cell and grow

With monitor.OnlineMonitor attached too, a last panel "what h is for" shows the online accuracy of each
label column (lines), at epoch ends the same classifier on held-out images (squares) and the kNN accuracy
(dots), their chance levels (dotted) and, when given, the finished model's offline probe (dashed). Outside a
kernel it only records (``curves.steps``, ``curves.history``, ``curves.probes``), so it is testable headless.
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence

from .notebook import in_notebook, png_bytes, show_png

#: Prefixes of monitor.OnlineMonitor's accuracy records: "<kind>_<column>_acc".
PROBE_KINDS = ("online_", "heldout_", "knn_")


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
    (``curves.end``); elsewhere it only records. The monitor's records
    ("online_<col>_acc", "heldout_<col>_acc", "knn_<col>_acc", "<col>_chance") go to ``probes``
    (key -> [(step, value)]) and ``label_chance``;
    ``offline`` ({column: accuracy}, settable after training, then ``redraw()``): the dashed lines.
    """

    def __init__(self, keys: Sequence[str] = ("loss", "inv", "equi", "gain", "inv_top1", "equi_top1"),
                 min_interval_s: float = 0.5, auto_display: bool = True, dpi: int = 80,
                 offline: Optional[dict[str, float]] = None):
        self.keys = tuple(keys)
        self.steps: list[float] = []
        self.history: dict[str, list[float]] = {key: [] for key in self.keys}
        self.chance: dict[str, float] = {}  # key -> its chance line, from the trainer's *_chance metrics
        self.probes: dict[str, list[tuple[float, float]]] = {}  # "online_shape_acc" -> [(step, accuracy)]
        self.label_chance: dict[str, float] = {}  # "shape" -> the majority-class rate
        self.offline = dict(offline or {})
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
        for key, value in metrics.items():
            if key.startswith(PROBE_KINDS) and key.endswith("_acc"):
                self.probes.setdefault(key, []).append((self.steps[-1], float(value)))
            elif key.endswith("_chance") and key not in ("inv_chance", "equi_chance"):
                self.label_chance[key[: -len("_chance")]] = float(value)
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
        panels = len(keys) + bool(self.probes)
        columns = min(panels, 4)
        rows = math.ceil(panels / columns)
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
        if self.probes:
            self._probe_panel(fig.add_subplot(rows, columns, panels, label="what h is for"))
        return fig

    def _probe_panel(self, ax) -> None:
        """Per column, one colour: online (line), held-out (squares), kNN (dots), chance (dotted), offline (dashed)."""
        names = [key.split("_", 1)[1][: -len("_acc")] for key in self.probes]
        for i, name in enumerate(dict.fromkeys(names)):
            colour = f"C{i}"
            for kind, style in (("online", dict(linestyle="-")), ("heldout", dict(linestyle="none", marker="s")),
                                ("knn", dict(linestyle="none", marker="o"))):
                points = self.probes.get(f"{kind}_{name}_acc", [])
                if points:
                    ax.plot(*zip(*points), color=colour, label=f"{name} ({kind})", **style)
            if name in self.label_chance:
                ax.axhline(self.label_chance[name], color=colour, linestyle=":", linewidth=0.8)
            if name in self.offline:
                ax.axhline(self.offline[name], color=colour, linestyle="--", linewidth=1.0)
        ax.set_title("what h is for: accuracy\n(dotted: chance; dashed: offline probe)", fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6, loc="best")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
