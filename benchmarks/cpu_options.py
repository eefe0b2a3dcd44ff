"""What pays on a CPU: the cpu-live training step under each option, side by side in one run.

    python benchmarks/cpu_options.py                        # SimCLR and EquiMod, every option, ratios
    python benchmarks/cpu_options.py --variants simclr --steps 5 --repeats 3 --json runs/cpu_options.json

The baseline is the step the comparisons train: ``compare.variant_config(variant, 0, "cpu-live")``
(ConvNet, batch 64, the synthetic augmentation; ``--precision``, default auto = bf16 autocast on a
CPU with bf16 instructions; channels_last, TrainConfig's default), in this process with one torch
thread. One ``Trainer`` per (variant, setting) on random 32x32 images, each built from the baseline
config with one override:

    base         the baseline
    fp32         precision="fp32"
    contiguous   channels_last=False (NCHW)
    compile      compile=True (torch.compile; its compile time is in the untimed warm-up; if it
                 fails on this machine the row is skipped with the reason, the run goes on)
    batch128     batch_size=128 (steps differ in size, so compare images/s, not ms/step)
    threads2     the base Trainer timed with torch.set_num_threads(2) in its blocks (1 again after)

After warm-up, the rows are timed in alternating blocks of ``--steps`` steps of
``train_step(step, make_batch(images, step))`` (the order rotated each repeat, so slow moments hit
every row), medians kept. Each row prints ms/step, images/s and ``ratio=`` its images/s over its
variant's base images/s (> 1: faster).

Two at once vs one after the other. Two worker processes (this script, ``--worker``, one torch
thread each, ``OMP_NUM_THREADS=1``) each build the base Trainer of the first variant, warm up,
say "ready" and wait; the parent then starts both together (parallel) or one, then the other
(sequential), each timing ``--pair-steps`` steps. Aggregate images/s: all images of both over the
span from the first start to the last end (parallel), or over the sum of the two timed spans
(sequential); process start-up and warm-up are not timed. Arrangements alternate over
``--repeats``; medians kept. Last line: ``two_at_once_ratio=<parallel / sequential images/s>``
(2 = two cores give twice the learning per minute; 1 = nothing gained).

These are measurements of this machine in this run, nothing compared with a number from elsewhere.
Run on a quiet machine; the spread (max - min) / median of the repeats is printed as the noise.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_step.py, run from anywhere
from train_step import median_and_spread, random_dataset, time_steps  # noqa: E402

from equimod_edu.compare import variant_config  # noqa: E402  (train_step put the repository on sys.path)
from equimod_edu.train import Trainer, cpu_has_native_bf16  # noqa: E402

#: setting -> (TrainConfig overrides, torch threads in its blocks)
SETTINGS = {
    "base": ({}, 1),
    "fp32": ({"precision": "fp32"}, 1),
    "contiguous": ({"channels_last": False}, 1),
    "compile": ({"compile": True}, 1),
    "batch128": ({"batch_size": 128}, 1),
    "threads2": (None, 2),  # None: the base Trainer itself
}


def base_trainer(args, variant: str, out_dir: str, **overrides) -> Trainer:
    """The cpu-live Trainer of ``variant`` as the comparisons train it, with ``overrides``."""
    run = dict(out_dir=out_dir, progress=False, device="cpu", log_every=10**9, checkpoint_every=10**9,
               precision=args.precision)
    cfg = variant_config(variant, 0, args.preset, **{**run, **overrides})
    return Trainer(cfg, dataset=random_dataset(max(cfg.batch_size, 256), cfg.augmentation().size))


class Slot:
    """One row: a Trainer, the torch threads of its blocks, and the next step index."""

    def __init__(self, trainer: Trainer, threads: int):
        self.trainer, self.threads, self.times = trainer, threads, []
        self.images = trainer.data.images[: trainer.cfg.batch_size]

    def run(self, steps: int, counter: dict) -> float:
        """Seconds per step over ``steps`` steps; ``counter``: the next step of each Trainer."""
        torch.set_num_threads(self.threads)
        try:
            first = counter.get(id(self.trainer), 0)
            counter[id(self.trainer)] = first + steps
            return time_steps(self.trainer, self.images, first, steps)
        finally:
            torch.set_num_threads(1)


def time_settings(args, tmp: str) -> tuple[dict, dict]:
    """Rows {name: Slot} timed in alternating blocks, and {name: reason} of rows skipped."""
    slots, skipped, counter = {}, {}, {}
    for variant in args.variants:
        base = None
        for setting in args.settings:
            overrides, threads = SETTINGS[setting]
            name = f"{variant} {setting}"
            try:
                trainer = base if overrides is None and base else base_trainer(
                    args, variant, f"{tmp}/{variant}-{setting}", **(overrides or {}))
                slot = Slot(trainer, threads)
                start = time.perf_counter()
                slot.run(args.warmup, counter)  # untimed: allocator, caches, torch.compile
            except Exception as error:  # torch.compile needs a C++ toolchain; say why, go on
                reason = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}"
                skipped[name] = reason
                print(f"{name:>20}: skipped ({reason})", flush=True)
                continue
            if setting == "base":
                base = trainer
            if setting == "compile":
                print(f"{name:>20}: warm-up with compilation {time.perf_counter() - start:.1f} s", flush=True)
            slots[name] = slot
    names = list(slots)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            slots[name].times.append(slots[name].run(args.steps, counter))
    return slots, skipped


def report_settings(args, slots: dict) -> dict:
    rows = {}
    for name, slot in slots.items():
        variant = name.split()[0]
        base = slots.get(f"{variant} base")
        mid, spread = median_and_spread(slot.times)
        batch = slot.trainer.cfg.batch_size
        per_s = batch / mid
        ratio = per_s / (base.trainer.cfg.batch_size / median_and_spread(base.times)[0]) if base else float("nan")
        rows[name] = {"ms_per_step": mid * 1e3, "images_per_s": per_s, "ratio": ratio, "spread": spread,
                      "batch": batch, "threads": slot.threads, "bf16": slot.trainer.bf16}
        print(f"{name:>20}: {mid * 1e3:7.1f} ms/step {per_s:7.0f} images/s  ratio={ratio:.3f}  "
              f"(batch {batch}, {slot.threads} thread{'s' * (slot.threads > 1)}, bf16 {slot.trainer.bf16}; "
              f"median of {args.repeats} x {args.steps} steps; spread {spread:.0%})")
    return rows


# --------------------------------------------------------------------------------------------
# Two models at once (one process per core) vs one after the other
# --------------------------------------------------------------------------------------------
def worker(args) -> None:
    """In a child process: warm up, print "ready", wait for a line on stdin, time, print the result."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = base_trainer(args, args.variants[0], f"{tmp}/worker")
        images = trainer.data.images[: trainer.cfg.batch_size]
        time_steps(trainer, images, 0, args.warmup)
        print("ready", flush=True)
        sys.stdin.readline()  # "go"
        start = time.time()  # wall clock: comparable across the two processes
        seconds = time_steps(trainer, images, args.warmup, args.pair_steps) * args.pair_steps
        print(f"window={start!r},{start + seconds!r}", flush=True)
        print(f"images_per_s={trainer.cfg.batch_size * args.pair_steps / seconds:.3f}", flush=True)


class Worker:
    """A worker process and a thread that queues its stdout lines (reads with a timeout)."""

    def __init__(self, args, log_dir: str, index: int):
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--variants", args.variants[0],
                   "--preset", args.preset, "--precision", args.precision, "--warmup", str(args.warmup),
                   "--pair-steps", str(args.pair_steps)]
        self.stderr_path = Path(log_dir) / f"worker{index}.err"
        self.stderr = open(self.stderr_path, "w")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True, env=env)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)  # end of output

    def expect(self, prefix: str, timeout: float) -> str:
        """The next stdout line starting with ``prefix``; RuntimeError on exit, error or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.fail(f"no {prefix!r} line within {timeout:.0f} s")
            if line is None:
                self.fail(f"exited (code {self.process.wait()}) before a {prefix!r} line")
            if line.startswith(prefix):
                return line[len(prefix):]

    def go(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self, timeout: float) -> tuple[float, float]:
        """(start, end) wall-clock seconds of the worker's timed steps; waits for it to exit."""
        start, end = (float(x) for x in self.expect("window=", timeout).split(","))
        self.expect("images_per_s=", timeout)
        self.process.wait(timeout)
        self.stderr.close()
        return start, end

    def fail(self, why: str):
        self.process.kill()
        self.process.wait()
        self.stderr.close()
        tail = self.stderr_path.read_text().strip().splitlines()[-15:]
        raise RuntimeError(f"worker {why}; its stderr ends:\n" + "\n".join(tail))


def run_pair(args, log_dir: str, parallel: bool) -> float:
    """Aggregate images/s of two workers run together (parallel) or one after the other."""
    windows, workers = [], []
    try:
        if parallel:
            workers = [Worker(args, log_dir, i) for i in range(2)]
            for w in workers:
                w.expect("ready", args.worker_timeout)
            for w in workers:
                w.go()
            windows = [w.result(args.worker_timeout) for w in workers]
            span = max(end for _, end in windows) - min(start for start, _ in windows)
        else:
            for i in range(2):
                workers.append(Worker(args, log_dir, i))
                workers[-1].expect("ready", args.worker_timeout)
                workers[-1].go()
                windows.append(workers[-1].result(args.worker_timeout))
            span = sum(end - start for start, end in windows)
    finally:  # a failed or timed-out worker: end its partner too
        for w in workers:
            if w.process.poll() is None:
                w.process.kill()
                w.process.wait()
    batch = variant_config(args.variants[0], 0, args.preset).batch_size
    return 2 * args.pair_steps * batch / span


def time_pairs(args) -> dict:
    times = {"parallel": [], "sequential": []}
    with tempfile.TemporaryDirectory() as log_dir:
        for r in range(args.repeats):  # alternate which arrangement goes first
            for arrangement in (("parallel", "sequential") if r % 2 == 0 else ("sequential", "parallel")):
                times[arrangement].append(run_pair(args, log_dir, arrangement == "parallel"))
    result = {}
    for arrangement, label in (("sequential", "one after the other"), ("parallel", "two at once       ")):
        mid, spread = median_and_spread(times[arrangement])
        result[arrangement] = {"images_per_s": mid, "spread": spread}
        print(f"{args.variants[0]} base x 2, {label}: {mid:7.0f} images/s in all  "
              f"(median of {args.repeats}, {args.pair_steps} steps each; spread {spread:.0%})")
    result["ratio"] = result["parallel"]["images_per_s"] / result["sequential"]["images_per_s"]
    print(f"two_at_once_ratio={result['ratio']:.3f}")
    return result


# --------------------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="simclr,equimod",
                        help="compare variants; each gets every setting (the first also runs the two-at-once test)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"a subset of {', '.join(SETTINGS)}")
    parser.add_argument("--preset", default="cpu-live", help="the TrainConfig preset of the baseline")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="the baseline's TrainConfig.precision (auto: bf16 on CPUs with bf16 instructions)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="alternating blocks (and pair arrangements)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation included)")
    parser.add_argument("--pair-steps", type=int, default=None,
                        help="timed steps of each worker in the two-at-once test (default 3 x --steps)")
    parser.add_argument("--no-pairs", action="store_true", help="skip the two-at-once test")
    parser.add_argument("--worker-timeout", type=float, default=600.0, help="seconds a worker may take per phase")
    parser.add_argument("--json", default=None, help="also write the rows and ratios to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal: one child process
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = sorted(set(args.settings) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    args.pair_steps = args.pair_steps or 3 * args.steps
    torch.set_num_threads(1)
    if args.worker:
        return worker(args)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 "
          f"{cpu_has_native_bf16()}, {os.cpu_count()} CPUs, preset {args.preset}, precision {args.precision}, "
          f"1 thread unless the row says", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        slots, skipped = time_settings(args, tmp)
        rows = report_settings(args, slots)
    pairs = None if args.no_pairs else time_pairs(args)
    if args.json:
        record = {"preset": args.preset, "precision": args.precision, "steps": args.steps, "repeats": args.repeats,
                  "rows": rows, "skipped": skipped, "two_at_once": pairs,
                  "command": "python benchmarks/cpu_options.py " + " ".join(sys.argv[1:])}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2))
        print(args.json)


if __name__ == "__main__":
    main()
