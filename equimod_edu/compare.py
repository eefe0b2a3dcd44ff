"""Compare methods honestly: train each variant on the same budget and seeds, evaluate, tabulate.

    equimod-edu demo                                       # the main job: random init vs SimCLR vs EquiMod
    equimod-edu compare --variants simclr,equimod,equimod-mlp-cyclic --seeds 0,1,2 --out runs/headline

Each (variant, seed) trains with `train.Trainer` into OUT/<variant>-s<seed>/ (a finished run of the
same settings is reused, an interrupted one resumed, one of other settings trained again) and is
evaluated with `report.evaluate_run`; the random-init baseline (the same architecture, untrained)
is evaluated for each seed too. The summary holds the mean and standard deviation over seeds of
each headline metric.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from pathlib import Path
from typing import Optional, Sequence

from .checkpoint import CHECKPOINT_NAME, load_checkpoint
from .config import TrainConfig
from .run_folder import REUSABLE_CHANGES, changed_settings, describe_changes
from .train import Trainer

#: Named variants: overrides of the preset. The paper's module is "equimod"; "equimod-mlp-cyclic"
#: is the change this project measured (an MLP predictor and a (cos, sin) hue code).
#: "simclr-no-colour" is the controlled experiment for invariance: the same SimCLR without the
#: augmentations that change colour (hue, saturation, grayscale); what it keeps and SimCLR loses
#: is what colour invariance throws away. "supervised" trains the same backbone with the labels
#: (supervised.train_supervised: the Trainer with the supervised objective). "equimod-mlp-cyclic-h"
#: asks for the equivariance in h itself (no projector g': y = h), so what the predictor needs (the
#: colour) must stay in the representation that is probed.
#: "equimod-mlp-cyclic-colour" shows the predictor only the colour parameters: the two views of an
#: image then differ, for the predictor, only by their colour changes, so the module must use them.
#: "equimod-mlp-cyclic-colour-h" combines the two; "...-lam0.3" weighs its loss 0.3 instead of 1.
#: "equimod-lam0", "-lam0.3", "-lam3": the paper's module with its loss weighted 0, 0.3 or 3
#: (lam 0: the module is built and measured but nothing trains it), a lambda sweep. "augself": SimCLR
#: plus AugSelf's head regressing the views' relative crop and colour parameters (augself.py).
#: "care": SimCLR plus CARE's matching of the views' Gram matrices within groups sharing one augmentation (care.py):
#: the paper's design, an extra group-shared pair for that loss (about 2x a SimCLR step). "care-shared": one
#: group-shared pair feeds both losses (about a SimCLR step; the NT-Xent sees one augmentation pair per group).
#: "essl": SimCLR plus E-SSL's head telling which of four rotations a small view shows (essl.py).
#: "cassle": SimCLR whose projector also reads an MLP of each view's parameters t (cassle.py).
#: "split": SimCLR whose z is split: half invariant, half predicted from the other view's half by a
#: hypernetwork of the views' relative parameters (split.py, after SIE).
#: A "*-time" variant trains ``TIME_MATCH[variant]`` times more epochs: the
#: baseline given the wall time of its EquiMod twin (equal compute, not only equal epochs).
NO_COLOUR = {"hue": 0.0, "saturation": 0.0, "gray_p": 0.0}
VARIANTS = {
    "simclr": dict(base="simclr", equimod=False),
    "simclr-no-colour": dict(base="simclr", equimod=False, augment_overrides=NO_COLOUR),
    "simclr-time": dict(base="simclr", equimod=False),
    "simclr-time2": dict(base="simclr", equimod=False),
    "augself": dict(base="simclr", equimod=False, objective="augself"),
    "care": dict(base="simclr", equimod=False, objective="care"),
    "care-shared": dict(base="simclr", equimod=False, objective="care", care_pair="shared"),
    "essl": dict(base="simclr", equimod=False, objective="essl"),
    "cassle": dict(base="simclr", equimod=False, objective="cassle"),
    "split": dict(base="simclr", equimod=False, objective="split"),
    "equimod": dict(base="simclr", equimod=True),
    "equimod-mlp-cyclic": dict(base="simclr", equimod=True, predictor_depth=1, hue_encoding="cyclic"),
    # the weight of the equivariance loss (paper: 1); lam 0 keeps the module, trained by nothing, measured
    "equimod-lam0": dict(base="simclr", equimod=True, lam=0.0),
    "equimod-lam0.3": dict(base="simclr", equimod=True, lam=0.3),
    "equimod-lam3": dict(base="simclr", equimod=True, lam=3.0),
    "equimod-mlp-cyclic-h": dict(base="simclr", equimod=True, predictor_depth=1, hue_encoding="cyclic",
                                 equi_projector=False),
    "equimod-mlp-cyclic-colour": dict(base="simclr", equimod=True, predictor_depth=1, hue_encoding="cyclic",
                                      param_groups=("jitter", "brightness", "contrast", "saturation", "hue",
                                                    "grayscale")),
    "equimod-mlp-cyclic-colour-h": dict(base="simclr", equimod=True, predictor_depth=1, hue_encoding="cyclic",
                                        equi_projector=False,
                                        param_groups=("jitter", "brightness", "contrast", "saturation", "hue",
                                                      "grayscale")),
    "equimod-mlp-cyclic-colour-h-lam0.3": dict(base="simclr", equimod=True, predictor_depth=1, hue_encoding="cyclic",
                                               equi_projector=False, lam=0.3,
                                               param_groups=("jitter", "brightness", "contrast", "saturation",
                                                             "hue", "grayscale")),
    # BYOL's projection is 256 wide, as the paper's (and as the shipped results were measured)
    "byol": dict(base="byol", equimod=False, z_dim=256),
    "byol-time": dict(base="byol", equimod=False, z_dim=256),
    "byol-equimod": dict(base="byol", equimod=True, z_dim=256),
    "byol-equimod-mlp-cyclic": dict(base="byol", equimod=True, predictor_depth=1, hue_encoding="cyclic", z_dim=256),
    "supervised": dict(base="simclr", equimod=False, objective="supervised"),
}

#: Epoch multipliers of the time-matched baselines. An EquiMod step runs 3 images per pair through
#: the backbone, its base 2: measured at the CPU recipe's batch size 64, one thread, an EquiMod
#: step costs 1.46x a SimCLR step under bf16 autocast (1.69x in float32; data/results/peers.json's
#: step_cost); 1.5 keeps the epochs whole. The comparisons record each run's train_seconds, so the
#: match can be checked in data/results/. "simclr-time2" (twice the epochs) is the equal-time baseline
#: of the peers that cost about 2x a SimCLR step (CARE's separate group-shared pair, 1.85x; E-SSL's
#: rotations at 1.57x sit between the two), benchmarks/train_step.py --mode variants measures each cost.
TIME_MATCH = {"simclr-time": 1.5, "simclr-time2": 2.0, "byol-time": 1.5}


def variant_config(variant: str, seed: int, preset: str, overrides: Optional[dict] = None, **run) -> TrainConfig:
    """The TrainConfig of one (variant, seed): preset, then the caller's overrides, then the variant.

    ``augment_overrides`` are merged (the variant's win), so a variant without colour augmentation
    keeps, e.g., a caller's ``hue`` setting off. ``run``: further fields (out_dir, progress...).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
    overrides = dict(overrides or {})
    changes = dict(VARIANTS[variant])
    base = TrainConfig.preset(preset, **overrides)
    changes["augment_overrides"] = {**base.augment_overrides, **changes.get("augment_overrides", {})}
    if variant in TIME_MATCH:
        changes["epochs"] = max(1, round(base.epochs * TIME_MATCH[variant]))
    return TrainConfig.from_dict({**base.to_dict(), **changes, "seed": seed, **run})


#: Headline metrics: name -> (description, higher is better).
METRICS = {
    "shape_acc": "linear probe on frozen h, target label (shape)",
    "colour_acc": "linear probe on frozen h, colour label",
    "knn_acc": "weighted 200-NN on frozen h, target label",
    "colour_knn": "weighted 200-NN on frozen h, colour label",
    "equivariance_gain": "cos(y, y_hat) - cos(y, y_o), own module (post-hoc for baselines)",
    "mrr": "retrieval of the true view by the prediction, MRR (post-hoc for baselines)",
    "hit1": "same, Hit@1",
    "posthoc_gain": "gain of a post-hoc predictor on standardised h (same for every model)",
    "posthoc_mrr": "MRR of that post-hoc predictor",
    "param_r2": "mean R^2 of linear probes for the continuous augmentation parameters from [h_o; h_view]",
    "crop_r2": "mean R^2 of those probes for the crop box (top, left, height, width)",
    "colour_r2": "mean R^2 of those probes for the colour factors (brightness, contrast, saturation, hue)",
    "flip_acc": "accuracy of the probe for the flip (chance about 0.5)",
    "hue_r2": "R^2 of the probe for the hue shift",
    "hue_sensitivity": "drop of cos(y, y_hat) when the hue columns of t are permuted (own module)",
    "train_seconds": "wall seconds of training (the machine's CPU; 0 for random init)",
    "inv_final": "NT-Xent of the last log line of training (SimCLR bases)",
    "inv_chance": "its chance value log(2N - 1): a loss at this line has learned nothing",
    "inv_top1_final": "fraction of training views whose partner was the nearest candidate (chance 1/(2N-1))",
}

#: The compact table of the main job.
DEMO_METRICS = ("shape_acc", "colour_acc", "knn_acc", "colour_knn", "equivariance_gain", "mrr", "inv_final",
                "inv_chance", "inv_top1_final", "train_seconds")


def _mean_std(values: Sequence[Optional[float]]) -> Optional[dict]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values)}


def summarize(runs: dict[str, dict[int, dict]]) -> dict[str, dict[str, Optional[dict]]]:
    """{variant: {seed: headline}} -> {variant: {metric: {"mean", "std", "n"}}} (std over seeds)."""
    return {variant: {m: _mean_std([h.get(m) for h in by_seed.values()]) for m in METRICS}
            for variant, by_seed in runs.items()}


def table_markdown(summary: dict, metrics: Sequence[str] = tuple(METRICS)) -> str:
    """A markdown table, one row per variant, mean +- std (n seeds) per metric."""
    metrics = [m for m in metrics if any(summary[v].get(m) for v in summary)]
    lines = ["| model | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for variant, row in summary.items():
        cells = []
        for m in metrics:
            s = row.get(m)
            cells.append("n/a" if s is None else (f"{s['mean']:.3f}" + (f" ± {s['std']:.3f}" if s["n"] > 1 else "")))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_figure(summary: dict, metrics: Sequence[str] = ("shape_acc", "colour_acc", "knn_acc", "colour_knn")):
    """Grouped bars (mean, error bar = std over seeds) of the probe metrics per variant (a Figure)."""
    from .figures import grouped_bars

    means = {v: {m: (summary[v].get(m) or {}).get("mean") for m in metrics} for v in summary}
    stds = {v: {m: (summary[v].get(m) or {}).get("std", 0.0) for m in metrics} for v in summary}
    ax = grouped_bars(means, "What the frozen representation keeps (mean ± std over seeds)",
                      "accuracy on held-out images", errors=stds, rotation=0)
    ax.set_ylim(0, 1)
    return ax.figure


def train_variant(variant: str, seed: int, out_dir: Path, preset: str, overrides: dict, progress: bool,
                  log=print) -> Path:
    """Train one (variant, seed) into out_dir/<variant>-s<seed>/.

    The run there is reused if it finished with the same settings (all but REUSABLE_CHANGES),
    resumed if it stopped early with them, and trained again (the folder is compare's) if it was
    trained with other settings, saying so with ``log``.
    """
    run_dir = Path(out_dir) / f"{variant}-s{seed}"
    cfg = variant_config(variant, seed, preset, overrides, out_dir=str(run_dir), progress=progress)
    if cfg.objective == "supervised":  # the reference's recipe (AdamW, one log line per epoch); reuse as here
        from .supervised import train_supervised
        train_supervised(cfg, progress=progress, overwrite=True, log=log)
        return run_dir
    checkpoint = run_dir / CHECKPOINT_NAME
    state = load_checkpoint(checkpoint) if checkpoint.exists() else None
    changed = changed_settings(state["config"], cfg, REUSABLE_CHANGES) if state is not None else []
    if changed:
        log(f"{run_dir} was {describe_changes(state['config'], cfg, changed)}: training it again")
    elif state is not None and state.get("stop_reason") == "finished":
        return run_dir
    resume = state is not None and not changed
    trainer = Trainer(cfg, resume=resume, overwrite=not resume)  # compare's folder: restarted when not resumed
    trainer.run()
    if trainer.stop_reason != "finished":  # Ctrl-C / SIGTERM: the checkpoint is saved, stop here
        raise KeyboardInterrupt(f"{trainer.stop_reason}; run the same command again to continue")
    return run_dir


def training_summary(run_dir: Path) -> dict:
    """train_seconds and the last log line's NT-Xent, its chance line and top-1, from the checkpoint."""
    path = Path(run_dir) / CHECKPOINT_NAME
    state = load_checkpoint(path) if path.exists() else {}
    last = (state.get("metrics") or [{}])[-1]
    contrastive = "inv_chance" in last  # NT-Xent has a chance line; BYOL's regression loss has none
    return {"train_seconds": state.get("train_seconds"), "inv_final": last.get("inv") if contrastive else None,
            "inv_chance": last.get("inv_chance"), "inv_top1_final": last.get("inv_top1")}


def cached_report(run_dir: Path, sizes, seed: int) -> Optional[dict]:
    """run_dir/eval/report.json if it was written after the checkpoint with these sizes and seed."""
    import dataclasses

    path, checkpoint = Path(run_dir) / "eval" / "report.json", Path(run_dir) / CHECKPOINT_NAME
    if not (path.exists() and checkpoint.exists()) or path.stat().st_mtime < checkpoint.stat().st_mtime:
        return None
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    meta = report.get("meta", {})
    return report if meta.get("sizes") == dataclasses.asdict(sizes) and meta.get("seed") == seed else None


def train_and_evaluate(variant: str, seed: int, out_dir: Path, preset: str, overrides: dict, sizes,
                       fast: bool = True, progress: bool = False, log=print) -> tuple[Path, float, float]:
    """Train one (variant, seed) (``train_variant``) and write its report, unless a current one is there.

    Returns (run_dir, seconds of training, seconds of evaluation).
    """
    from .report import evaluate_run, write_report

    tic = time.perf_counter()
    run_dir = train_variant(variant, seed, out_dir, preset, overrides, progress, log)
    trained = time.perf_counter()
    if cached_report(run_dir, sizes, seed) is None:
        write_report(evaluate_run(run_dir, fast=fast, sizes=sizes, seed=seed), run_dir / "eval")
    return run_dir, trained - tic, time.perf_counter() - trained


def _job(variant, seed, out_dir, preset, overrides, sizes, fast, threads):
    """One worker's (variant, seed): ``threads`` torch threads, no progress bar (the lead process reports)."""
    import torch

    torch.set_num_threads(threads)
    _, train_s, eval_s = train_and_evaluate(variant, seed, out_dir, preset, overrides, sizes, fast, progress=False,
                                            log=lambda line: print(line, flush=True))
    return variant, seed, train_s, eval_s


def _watch(pending, epochs: dict, out_dir: Path, every_s: float = 2.0) -> None:
    """Progress bars of runs training in other processes, read from their metrics.jsonl until ``pending`` is ready.

    epochs: {run name: its number of epochs}, one bar each (the epoch of its last log line).
    """
    from tqdm.auto import tqdm

    bars = {name: tqdm(total=total, desc=name, unit="epoch", position=i, dynamic_ncols=True,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} epochs [{elapsed}]")
            for i, (name, total) in enumerate(epochs.items())}
    try:
        while not pending.ready():
            for name, bar in bars.items():
                lines = (Path(out_dir) / name / "metrics.jsonl")
                try:
                    last = lines.read_text().strip().rsplit("\n", 1)[-1]
                    bar.n = json.loads(last).get("epoch", bar.n) if last else bar.n
                except (OSError, ValueError):  # not started yet, or a line half written
                    continue
                bar.refresh()
            pending.wait(every_s)
    finally:
        for bar in bars.values():
            bar.close()


@contextlib.contextmanager
def _terminate_raises():
    """SIGTERM raises KeyboardInterrupt here meanwhile, so the worker pool is shut down, not orphaned.

    (Pool's exit sends its workers SIGTERM: each Trainer saves its checkpoint and stops; a Ctrl-C
    reaches them all directly.)
    """
    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave the handlers alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_in_parallel(pairs: list, jobs: int, out_dir: Path, preset: str, overrides: dict, sizes, fast: bool,
                     log, meanwhile=None, progress: bool = True) -> dict:
    """Train and evaluate ``pairs`` of (variant, seed) in ``jobs`` worker processes; {name: seconds}.

    Each worker gets cpu_count // jobs torch threads (one each on a 2-core machine, where two small
    ConvNets in two processes use the cores better than one model on two threads). ``meanwhile()``
    runs in this process while they work; then, with ``progress``, a bar per run. Runs and reports
    land in their folders, so the sequential pass of ``compare`` then only reads them; an
    interrupted job resumes on the next call.
    """
    import multiprocessing
    import os

    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch thread pool inherited
    seconds = {}
    with _terminate_raises(), context.Pool(jobs) as pool:  # leaving it terminates the workers: they save and stop
        pending = pool.starmap_async(_job, [(v, s, out_dir, preset, overrides, sizes, fast, threads)
                                            for v, s in pairs], chunksize=1)  # in order, one at a time
        if meanwhile is not None:
            meanwhile()
        if progress:
            _watch(pending, {f"{v}-s{s}": variant_config(v, s, preset, overrides).epochs for v, s in pairs}, out_dir)
        for variant, seed, train_s, eval_s in pending.get():
            seconds[f"{variant}-s{seed}"] = train_s + eval_s
            log(f"{variant} seed {seed}: trained in {train_s:.0f} s, evaluated in {eval_s:.0f} s (worker process)")
    return seconds


def compare(variants: Sequence[str], seeds: Sequence[int], out_dir, preset: str = "cpu-live",
            overrides: Optional[dict] = None, fast_eval: bool = True, random_init: bool = True,
            progress: bool = True, log=print, eval_sizes=None, jobs: int = 1) -> dict:
    """Train and evaluate every (variant, seed); returns {"runs", "summary", "wall_seconds", ...}.

    Writes OUT/comparison.json, OUT/comparison.md and OUT/comparison.png. eval_sizes: an
    report.EvalSizes overriding the FAST / FULL sizes (e.g. a one-minute smoke run). jobs > 1: the
    (variant, seed) runs train and are evaluated in that many worker processes at once (the
    random-init baseline meanwhile in this one); the numbers are those of one-at-a-time runs with
    the same threads per run (``OMP_NUM_THREADS=1`` as data/results/ was made).
    """
    from .report import FAST, FULL, evaluate_random_init, headline, write_report

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    overrides = dict(overrides or {})
    runs: dict[str, dict[int, dict]] = {}
    seconds: dict[str, float] = {}
    sizes = eval_sizes or (FAST if fast_eval else FULL)
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs = {jobs!r}: must be a positive int")

    def evaluate_random(seed: int) -> None:
        """The backbone every variant starts from, untrained (scored with a post-hoc predictor)."""
        cfg = variant_config("simclr", seed, preset, overrides)
        tic = time.perf_counter()
        report = evaluate_random_init(cfg, fast=fast_eval, sizes=eval_sizes, seed=seed)
        write_report(report, out_dir / f"random-s{seed}" / "eval")
        runs.setdefault("random", {})[seed] = {**headline(report), "train_seconds": 0.0}
        seconds[f"random-s{seed}"] = time.perf_counter() - tic

    pairs = [(variant, seed) for seed in seeds for variant in variants]
    parallel = jobs > 1 and len(pairs) > 1
    def random_baselines() -> None:
        for seed in seeds if random_init else ():
            evaluate_random(seed)

    if parallel:  # the runs in worker processes, the random-init baselines here meanwhile
        seconds.update(_run_in_parallel(pairs, min(jobs, len(pairs)), out_dir, preset, overrides, sizes, fast_eval,
                                        log, meanwhile=random_baselines, progress=progress))
    for seed in seeds:
        if random_init and not parallel:
            evaluate_random(seed)
        for variant in variants:
            run_dir, train_s, eval_s = train_and_evaluate(variant, seed, out_dir, preset, overrides, sizes,
                                                           fast_eval, progress, log)
            report = cached_report(run_dir, sizes, seed)
            runs.setdefault(variant, {})[seed] = {**headline(report), **training_summary(run_dir)}
            done = ("" if parallel else f"trained in {train_s:.0f} s, evaluated in {eval_s:.0f} s: ")
            seconds.setdefault(f"{variant}-s{seed}", train_s + eval_s)
            log(f"{variant} seed {seed}: {done}" +
                ", ".join(f"{k} {v:.3f}" for k, v in runs[variant][seed].items() if v is not None))
    summary = summarize(runs)
    result = {"preset": preset, "overrides": overrides, "variants": list(variants), "seeds": list(seeds),
              "fast_eval": fast_eval, "runs": {v: {str(s): h for s, h in r.items()} for v, r in runs.items()},
              "summary": summary, "metrics": METRICS, "seconds": seconds,
              "wall_seconds": time.perf_counter() - start}
    (out_dir / "comparison.json").write_text(json.dumps(result, indent=2))
    (out_dir / "comparison.md").write_text(table_markdown(summary) + "\n")
    fig = comparison_figure(summary)
    fig.savefig(out_dir / "comparison.png", dpi=130)
    return result


# ---- the augmentation-aware peers beside the shipped comparison ---------------------------------------------
#: The rows of data/results/live.json set beside the peers of data/results/peers.json (README, notebook 7).
PEER_REFERENCES = ("simclr", "simclr-no-colour", "simclr-time", "equimod", "equimod-mlp-cyclic", "byol",
                   "byol-equimod", "random")
#: The columns of that table (a column no row has is left out by table_markdown).
PEER_METRICS = ("shape_acc", "colour_acc", "knn_acc", "posthoc_gain", "posthoc_mrr", "crop_r2", "colour_r2",
                "train_seconds")


def merged_summary(*parts) -> dict:
    """One summary (rows named by variant) from several comparisons, in the order given.

    Each part is a summary {variant: {metric: ...}}, a comparison result (a dict with a "summary"),
    or a pair (either of those, variants) that takes only the listed rows, in that order. A listed
    variant the part lacks raises KeyError; a variant in two parts raises ValueError (no silent
    overwrite: choose its file with a pair).

    >>> a, b = {"simclr": {"shape_acc": None}, "random": {}}, {"summary": {"augself": {}, "random": {}}}
    >>> list(merged_summary((a, ["simclr", "random"]), (b, ["augself"])))
    ['simclr', 'random', 'augself']
    """
    merged: dict = {}
    for part in parts:
        result, names = part if isinstance(part, tuple) else (part, None)
        summary = result["summary"] if isinstance(result.get("summary"), dict) else result
        for name in names if names is not None else list(summary):
            if name not in summary:
                raise KeyError(f"no variant {name!r} in this comparison (it has {', '.join(summary)})")
            if name in merged:
                raise ValueError(f"variant {name!r} is in two comparisons: take it from one of them, "
                                 f"with a pair (result, variants)")
            merged[name] = summary[name]
    return merged
