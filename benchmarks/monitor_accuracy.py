"""How close the online monitor's accuracy gets to the offline probe of the finished model, and why not closer.

    python benchmarks/monitor_accuracy.py                       # --mode train: cpu-live SimCLR seed 0 (2-3 min)
    python benchmarks/monitor_accuracy.py --rows 64 --memory 4096
    python benchmarks/monitor_accuracy.py --mode fixed --checkpoint runs/simclr-s0/checkpoint.pt
    python benchmarks/monitor_accuracy.py --mode fixed --checkpoint PATH --quick   # a smoke run, seconds

These are measurements, not tests: they print accuracies measured in this run; nothing is compared
with a number from elsewhere, and nothing fails. These two modes are the measurements behind the
accuracies equimod_edu/monitor.py's docstring quotes (one thread; h in fp32 in --mode fixed).

--mode train (default). Trains ``compare.variant_config(--variant, --seed, "cpu-live")`` with
    ``monitor.OnlineMonitor(rows=--rows, memory=--memory)`` attached, then evaluates the finished model
    as compare's reports do (``report.evaluate_run`` with the FAST sizes: label probes on h of 8,000
    training and 4,000 test images; ``posthoc=False`` skips only sections computed after the probes).
    Prints, per label column: the last epoch end's "heldout_<col>_acc" (the online classifier on the
    monitor's fixed test images), the last logged per-step "online_<col>_acc", the offline probe, and
    offline - heldout. Last line: ``gap_shape=<offline - heldout>`` (the monitor's aim: <= 0.05).
--mode fixed. On a finished checkpoint's fixed features (``monitor.original_features``: h of the
    originals of the first 8,000 training images and of 1,000 seeded test images), separates the two
    causes of the gap, labels and drift:
    (a) labels vs accuracy: ``OnlineClassifier`` fitted full-batch (300 Adam steps, lr 2e-2) on 600,
        2,000, 4,000 and 8,000 labelled images (the first of a seeded order), scored on the test images;
    (b) the online protocol without drift: ``rows`` new images a step (in a seeded order) join a memory
        of the latest ``memory``, 256 drawn from it (a seeded torch.Generator) for one Adam step (lr
        2e-2), 750 steps (one cpu-live run), for (rows, memory) = (8, 1024) and (64, 4096).
--quick: tiny sizes (a smoke run): fixed, 1/10 of the images and 200 online steps; train, 2 epochs of
    640 images and the QUICK report sizes. --json PATH: also writes the results there.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from equimod_edu.checkpoint import load_model
from equimod_edu.compare import variant_config
from equimod_edu.data import load_dataset
from equimod_edu.dataset import shuffled_subset
from equimod_edu.monitor import OnlineClassifier, OnlineMonitor, default_columns, original_features
from equimod_edu.report import FAST, QUICK, evaluate_run
from equimod_edu.train import Trainer

LR, LEARN_ROWS = 2e-2, 256  # the monitor's defaults (OnlineMonitor's lr and learn_rows)


def last_value(records: list[dict], key: str):
    """The value of ``key`` in the last record that has it (None if none does)."""
    return next((r[key] for r in reversed(records) if key in r), None)


def train_mode(args) -> dict:
    """Train with the monitor, evaluate the finished model, and set the monitor's read-outs beside the probe."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or scratch)
        quick = dict(train_subset=640, epochs=2) if args.quick else None
        cfg = variant_config(args.variant, args.seed, "cpu-live", quick, out_dir=str(out), progress=False)
        monitor = OnlineMonitor(rows=args.rows, memory=args.memory)
        Trainer(cfg, callbacks=[monitor], overwrite=True).run()
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        report = evaluate_run(out, sizes=QUICK if args.quick else FAST, posthoc=False, seed=0, fast=True)
    print(f"{args.variant} seed {args.seed}, rows {args.rows}, memory {args.memory}; "
          f"offline probe on {report['meta']['n_train']} / {report['meta']['n_test']} images")
    print(f"{'column':8} {'heldout':>8} {'online':>8} {'offline':>8} {'gap':>8}")
    results = {}
    for column in monitor.columns:
        heldout = last_value(records, f"heldout_{column}_acc")
        online = last_value(records, f"online_{column}_acc")
        offline = report["labels"][column]["value"]
        gap = None if heldout is None else offline - heldout
        results[column] = dict(heldout=heldout, online=online, offline=offline, gap=gap)
        print(f"{column:8} " + " ".join(f"{v:8.3f}" if v is not None else f"{'-':>8}"
                                        for v in (heldout, online, offline, gap)))
    gap = results.get("shape", {}).get("gap")
    print(f"gap_shape={gap:.3f}" if gap is not None else "gap_shape=None")
    return {"mode": "train", "variant": args.variant, "seed": args.seed, "rows": args.rows,
            "memory": args.memory, "columns": results}


def fit_full_batch(h, y, h_test, y_test, n_classes: int, steps: int) -> float:
    """OnlineClassifier fitted on all of ``(h, y)`` for ``steps`` Adam steps: its accuracy on the test set."""
    head = OnlineClassifier(h.shape[1], n_classes, LR)
    for _ in range(steps):
        head.learn(h, y)
    return head.accuracy(h_test, y_test).item()


def simulate_online(h, y, h_test, y_test, n_classes: int, rows: int, memory: int, steps: int,
                    order, generator) -> float:
    """The monitor's protocol on fixed h, without drift: its accuracy on the test set after ``steps`` steps.

    Each step the next ``rows`` images of ``order`` join a memory of the latest ``memory``; LEARN_ROWS
    drawn from it (``generator``) make one Adam step.
    """
    head = OnlineClassifier(h.shape[1], n_classes, LR)
    for step in range(steps):
        seen = (step + 1) * rows  # images remembered so far: the latest `memory` of them are kept
        kept = order[torch.arange(max(0, seen - memory), seen) % len(order)]
        pick = kept[torch.randint(0, len(kept), (LEARN_ROWS,), generator=generator)]
        head.learn(h[pick], y[pick])
    return head.accuracy(h_test, y_test).item()


def fixed_mode(args) -> dict:
    """Labels vs accuracy and the simulated online protocol, on a finished checkpoint's fixed features."""
    scale = 10 if args.quick else 1
    n_train, n_test, fit_steps, online_steps = 8000 // scale, 1000 // scale, 300, 200 if args.quick else 750
    model, cfg = load_model(args.checkpoint)
    aug = cfg.augmentation()
    train = load_dataset(cfg.dataset, "train", cfg.data_root).subset(slice(0, n_train))
    test = shuffled_subset(load_dataset(cfg.dataset, "test", cfg.data_root), n_test, args.seed)
    h, h_test = (original_features(model, aug.original(part.images)) for part in (train, test))
    columns = default_columns(train)
    n_classes = {c: len(train.classes.get(c, [])) or int(train.labels[c].max()) + 1 for c in columns}
    # the labelled images: the first n of one seeded order (shuffled_subset's order, so nested sizes)
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(args.seed))
    sizes = [n // scale for n in (600, 2000, 4000, 8000)]
    fitted = {c: {n: fit_full_batch(h[order[:n]], train.labels[c][order[:n]], h_test, test.labels[c],
                                    n_classes[c], fit_steps) for n in sizes} for c in columns}
    print(f"{args.checkpoint}: h of {n_train} training / {n_test} test originals, dim {h.shape[1]}")
    print(f"(a) full batch, {fit_steps} Adam steps, lr {LR}: test accuracy by labelled images")
    print(f"{'images':>8} " + " ".join(f"{c:>8}" for c in columns))
    for n in sizes:
        print(f"{n:8d} " + " ".join(f"{fitted[c][n]:8.3f}" for c in columns))
    online = {}
    for rows, memory in ((8, 1024), (64, 4096)):
        generator = torch.Generator().manual_seed(args.seed)  # one per protocol: its order, then its draws
        stream = torch.randperm(n_train, generator=generator)
        online[f"{rows}x{memory}"] = {c: simulate_online(h, train.labels[c], h_test, test.labels[c], n_classes[c],
                                                         rows, memory, online_steps, stream, generator)
                                      for c in columns}
    print(f"(b) online protocol, {online_steps} steps, {LEARN_ROWS} drawn a step, lr {LR}: test accuracy")
    print(f"{'rows':>5} {'memory':>7} " + " ".join(f"{c:>8}" for c in columns))
    for key, accuracy in online.items():
        rows, memory = key.split("x")
        print(f"{rows:>5} {memory:>7} " + " ".join(f"{accuracy[c]:8.3f}" for c in columns))
    return {"mode": "fixed", "checkpoint": str(args.checkpoint), "n_train": n_train, "n_test": n_test,
            "full_batch": {c: {str(n): a for n, a in v.items()} for c, v in fitted.items()}, "online": online}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["train", "fixed"], default="train")
    p.add_argument("--variant", default="simclr", help="train: a compare variant")
    p.add_argument("--seed", type=int, default=0, help="train: the run's seed; fixed: the subsets' and draws' seed")
    p.add_argument("--rows", type=int, default=8, help="train: OnlineMonitor rows (images measured a step)")
    p.add_argument("--memory", type=int, default=1024, help="train: OnlineMonitor memory (images learned from)")
    p.add_argument("--out", help="train: keep the run in this folder (default: a temporary one)")
    p.add_argument("--checkpoint", help="fixed: a finished run's checkpoint.pt or folder")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    if args.mode == "fixed" and not args.checkpoint:
        p.error("--mode fixed needs --checkpoint")
    torch.set_num_threads(args.threads)
    results = train_mode(args) if args.mode == "train" else fixed_mode(args)
    if args.json:
        Path(args.json).write_text(json.dumps({**results, "threads": args.threads}, indent=2) + "\n")


if __name__ == "__main__":
    main()
