"""Speed of a training step and of an epoch: EquiMod against baselines measured in the same run.

    python benchmarks/train_step.py                         # --mode step: EquiMod / SimCLR s/step
    python benchmarks/train_step.py --mode variants --threads 1   # each compare variant / SimCLR, s/step
    python benchmarks/train_step.py --mode epoch            # per-image DataLoader / ours, s/epoch
    python benchmarks/train_step.py --mode monitor --threads 1    # cpu-live SimCLR step with / without OnlineMonitor
    python benchmarks/train_step.py --mode gpu-epoch --device cuda   # s per 50k-image epoch
    bash benchmarks/gpu_check.sh                            # all GPU checks (GPU_CHECK_SMOKE=1: CPU)
    python benchmarks/cpu_options.py                        # cpu-live step options, 2 models at once

These are benchmarks, not tests: they print times and a ratio, both measured in this run, on this
machine, with the same torch threads; nothing is compared with a number from elsewhere.

--mode step (default). EquiMod costs one more image per pair (x_o, x_1, x_2 through the backbone
    instead of x_1, x_2) plus g', p and u: 3 views against 2, so about 1.5x. Two
    ``equimod_edu.train.Trainer`` objects (EquiMod on / off, otherwise the same config, backbone
    and batch) time ``trainer.train_step(step, trainer.make_batch(images, step))`` (augmentation, forward, loss,
    backward, LARS step) after warm-up steps, alternating the two models block by block over
    ``--repeats`` blocks of ``--steps`` steps; the median seconds/step of each is kept. On CUDA
    each block is bracketed by ``torch.cuda.synchronize()``.
    Last line: ``ratio=<EquiMod s/step / SimCLR s/step>`` (target <= 1.6).

--mode variants. The step cost of each ``compare`` variant (``--variants``, default SimCLR, EquiMod and
    the augmentation-aware peers) at a preset's settings (``--preset``, default cpu-live: ConvNet,
    batch 64, the synthetic augmentation) on random 32x32 images: one Trainer per variant, warmed up,
    then timed in alternating blocks (the order rotated each repeat), medians kept. Prints ms/step,
    images/s and ``ratio=`` each variant's s/step over the first variant's (the baseline). These
    ratios are the "equal compute" of data/results/peers.json: a method at ratio r trains as long
    as its baseline given r times the epochs. ``--threads 1`` as the comparisons train.
    ``variant@precision`` sets one variant's precision (``--variants simclr@fp32,simclr@bf16,equimod@fp32,
    equimod@bf16``: what bf16 autocast buys, side by side in one run).

--mode monitor. The cost of monitor.OnlineMonitor (online linear probes of shape and colour on h of
    the originals of ``--monitor-rows`` images a step, default 8, an eval-mode forward for SimCLR): two
    cpu-live SimCLR Trainers on the synthetic set, one with the monitor attached, time
    ``train_step(step, next_batch(step))`` in alternating blocks (medians), and ``ratio=`` with / without
    (aim <= 1.05). The epoch-end read-out (kNN and held-out accuracy: 600 bank + 300 test images, eval
    mode) is timed apart, ``--repeats`` times, and printed as seconds per epoch
    and as a share of an epoch (aim <= 2 %).

benchmarks/cpu_options.py (its own file, built on this one's helpers): the cpu-live SimCLR and
    EquiMod steps as the comparisons train them (bf16 on a CPU with bf16 instructions, channels_last,
    one thread) against fp32, contiguous NCHW, torch.compile, batch 128 and two threads, in
    alternating blocks with ``ratio=`` images/s over the baseline's; then two one-thread training
    processes at once against one after the other (``two_at_once_ratio=``).

--mode epoch. The same EquiMod model (small ConvNet, CPU, batch 256) fed two ways:
    * baseline, the official code's style: a ``torch.utils.data.Dataset`` over uint8 HWC arrays
      that, per image, converts to PIL and returns x_o (ToTensor + Normalize) and two views from
      RandomResizedCrop(32, scale (0.2, 1), bicubic) -> RandomHorizontalFlip -> RandomApply(
      ColorJitter(0.4, 0.4, 0.4, 0.1), p 0.8) -> RandomGrayscale(0.2) -> ToTensor -> Normalize,
      *with the parameters of each view*, through a ``DataLoader(batch_size=256, shuffle=True,
      num_workers=2, drop_last=True)``; the main process turns the parameters into the predictor's
      input and runs the same forward / loss / backward / LARS step as the Trainer.
      ``--baseline-params capture`` (default): the views are made by the same torchvision
      transforms called through their ``get_params`` + functional form, so the crop box, flip,
      jitter on/off, jitter order and factors and grayscale are recorded per image (as the
      official code does) and standardised exactly as ``AugmentationConfig.encode``.
      ``--baseline-params zeros``: the plain ``transforms.Compose`` above, and t_1 = t_2 = zeros
      of the right shape (cheaper for the baseline, so a conservative ratio).
      Workers: 2. The reference machine has 2 cores, so the two workers share them with the main
      process (which uses torch's intra-op threads); this is the set-up a 2-core user gets.
      Each timed baseline epoch creates its DataLoader iterator (worker start-up included, as an
      epoch without persistent workers does).
    * ours: ``Trainer``'s device-resident path: the dataset lives on the device as one uint8
      tensor, ``trainer.batch_indices(epoch)`` gives the epoch's batches, and
      ``trainer.make_batch`` augments each whole batch with the batched engine.
    Both see the same ``--images`` images (random uint8, CIFAR-sized; an "epoch" is one pass,
    ``images // 256`` steps). Epochs alternate baseline / ours over ``--repeats``; medians kept.
    Last line: ``ratio=<baseline s/epoch / ours s/epoch>`` (target >= 2).

--mode gpu-epoch. One ``Trainer`` (ResNet-18 CIFAR stem, SimCLR+EquiMod or ``--base byol``, paper heads, batch 512)
    on ``--images`` random CIFAR-sized uint8 images (default 50,000) on the device. Times
    ``--steps`` steps after ``--warmup`` steps (compile happens there) and extrapolates to one
    50k-image epoch (images // batch steps). ``--setting fast``: bf16 autocast + channels_last +
    torch.compile; ``--setting plain``: fp32, contiguous NCHW, eager. On CUDA one more step runs
    under ``torch.cuda.set_sync_debug_mode("warn")`` and the number of host synchronisations is
    printed (the design asks for none inside a step).
    Also the augmentation's share of a step (the same steps' views timed alone).
    Last line: ``seconds_per_epoch=<x>`` (target on one H100, fast: <= 3).

--mode linear-eval. One epoch of the paper's SGD linear evaluation on the device (ResNet-18).

Noise. On a small shared CPU (the 2-core reference machine with other jobs running), torch's
default of 2 intra-op threads can make every small op wait for a descheduled OpenMP thread:
measured there, a 64x3x32x32 clamp_ took 8-12 ms with 2 threads and 0.015 ms with 1, which
makes the batched augmentation look ~50x slower than it is. Pass ``--threads 1`` on such a
machine (both sides of a ratio run in this process with the same setting); on a quiet machine
the default is fine. The spread (max - min) / median of the repeats is printed as the noise.

equimod_edu.train imports tqdm for its progress bar; these benchmarks never show one. On a bare
GPU machine without tqdm, a do-nothing stand-in is registered (``_ensure_tqdm``) so the import
works; nothing is installed.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import statistics
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from anywhere without installing the package
    sys.path.insert(0, str(REPO))


def _ensure_tqdm() -> bool:
    """Register a no-op ``tqdm.auto.tqdm`` if tqdm is not installed. True if the stand-in was used."""
    try:
        import tqdm.auto  # noqa: F401
        return False
    except ImportError:
        pass

    class NoBar:  # the few methods Trainer calls on a bar
        def __init__(self, *args, **kwargs):
            pass

        def update(self, n=1):
            pass

        def set_postfix(self, *args, **kwargs):
            pass

        def close(self):
            pass

        @staticmethod
        def write(text, *args, **kwargs):
            print(text)

    tqdm_module, auto = types.ModuleType("tqdm"), types.ModuleType("tqdm.auto")
    for module in (tqdm_module, auto):  # a spec: torch._dynamo calls importlib.util.find_spec("tqdm")
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    tqdm_module.tqdm = auto.tqdm = NoBar
    tqdm_module.auto = auto
    sys.modules.update({"tqdm": tqdm_module, "tqdm.auto": auto})
    return True


TQDM_STUBBED = _ensure_tqdm()

from equimod_edu.config import TrainConfig  # noqa: E402
from equimod_edu.dataset import ImageDataset  # noqa: E402
from equimod_edu.objectives import Batch  # noqa: E402
from equimod_edu.train import Trainer  # noqa: E402


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------
def random_dataset(n: int, size: int = 32, seed: int = 0) -> ImageDataset:
    """``n`` random uint8 CIFAR-sized images ``(n, 3, size, size)`` with a dummy label column."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return ImageDataset(images, {"label": torch.zeros(n, dtype=torch.int64)}, {}, "label")


def make_trainer(args, dataset: ImageDataset, out_dir: str, equimod: bool = True, **overrides) -> Trainer:
    """A Trainer on ``dataset`` with the CIFAR-10 augmentations.

    Heads are 512 wide for the ConvNet (as the cpu-live preset), the paper's 2048 otherwise.
    """
    hidden = args.proj_hidden or (512 if args.backbone == "convnet" else 2048)
    cfg = dict(dataset="cifar10", augment="cifar10", backbone=args.backbone, proj_hidden=hidden,
               batch_size=args.batch, epochs=10, warmup_epochs=1, equimod=equimod, device=args.device,
               progress=False, out_dir=out_dir, log_every=10**9, checkpoint_every=10**9)
    cfg.update(overrides)
    return Trainer(TrainConfig(**cfg), dataset=dataset)


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_and_spread(values: list[float]) -> tuple[float, float]:
    """Median and (max - min) / median, the spread quoted as the run's noise."""
    mid = statistics.median(values)
    return mid, (max(values) - min(values)) / mid


def header(args) -> None:
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device} ({name}), "
          f"backbone {args.backbone}, batch {args.batch}" + (", tqdm stand-in" if TQDM_STUBBED else ""))


# --------------------------------------------------------------------------------------------
# --mode step: EquiMod step / SimCLR step
# --------------------------------------------------------------------------------------------
def time_steps(trainer: Trainer, images: torch.Tensor, first_step: int, steps: int) -> float:
    """Seconds per train_step over `steps` consecutive steps (device synchronised)."""
    synchronize(trainer.device)
    start = time.perf_counter()
    for step in range(first_step, first_step + steps):
        metrics = trainer.train_step(step, trainer.make_batch(images, step))
    float(metrics["loss"])  # the last step's result on the host
    synchronize(trainer.device)
    return (time.perf_counter() - start) / steps


def mode_step(args) -> None:
    header(args)
    steps, repeats = args.steps or 5, args.repeats or 5
    with tempfile.TemporaryDirectory() as tmp:
        data = random_dataset(args.batch)
        trainers = {name: make_trainer(args, data, f"{tmp}/{name}", equimod=(name == "equimod"))
                    for name in ("equimod", "simclr")}
        images = {name: t.data.images[: args.batch] for name, t in trainers.items()}  # on the device
        for name, t in trainers.items():
            time_steps(t, images[name], 0, args.warmup)
        times = {name: [] for name in trainers}
        for r in range(repeats):  # alternate, and swap who goes first, so slow moments hit both
            for name in (("equimod", "simclr") if r % 2 == 0 else ("simclr", "equimod")):
                times[name].append(time_steps(trainers[name], images[name], args.warmup + r * steps, steps))
    result = {}
    for name, label in (("simclr", "SimCLR  (2 views)"), ("equimod", "EquiMod (3 views)")):
        mid, spread = median_and_spread(times[name])
        result[name] = mid
        print(f"{label}: {mid * 1e3:8.1f} ms/step  {args.batch / mid:8.0f} images/s  "
              f"(median of {repeats} x {steps} steps; spread {spread:.0%}; "
              f"all {', '.join(f'{x * 1e3:.0f}' for x in times[name])} ms)")
    print(f"ratio={result['equimod'] / result['simclr']:.3f}")


# --------------------------------------------------------------------------------------------
# --mode variants: the step cost of each compare variant, against the first
# --------------------------------------------------------------------------------------------
def mode_variants(args) -> None:
    from equimod_edu.compare import variant_config

    steps, repeats = args.steps or 5, args.repeats or 5
    names = [v.strip() for v in args.variants.split(",") if v.strip()]  # "simclr" or "simclr@bf16"
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for name in names:
            variant, _, precision = name.partition("@")
            cfg = variant_config(variant, 0, args.preset, out_dir=f"{tmp}/{name}", progress=False, device=args.device,
                                 log_every=10**9, checkpoint_every=10**9, precision=precision or args.precision)
            trainers[name] = Trainer(cfg, dataset=random_dataset(max(cfg.batch_size, 256), cfg.augmentation().size))
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
              f"preset {args.preset}, batch {cfg.batch_size}, precision {args.precision} "
              f"(bf16: {trainers[names[0]].bf16})")
        images = {name: t.data.images[: t.cfg.batch_size] for name, t in trainers.items()}
        for name, t in trainers.items():
            time_steps(t, images[name], 0, args.warmup)
        times = {name: [] for name in trainers}
        for r in range(repeats):  # rotate who goes first, so slow moments hit every variant
            for name in names[r % len(names):] + names[: r % len(names)]:
                times[name].append(time_steps(trainers[name], images[name], args.warmup + r * steps, steps))
    base = median_and_spread(times[names[0]])[0]
    rows = {}
    for name in names:
        mid, spread = median_and_spread(times[name])
        batch = trainers[name].cfg.batch_size
        rows[name] = {"ms_per_step": mid * 1e3, "ratio": mid / base, "spread": spread}
        print(f"{name:>24}: {mid * 1e3:7.1f} ms/step {batch / mid:7.0f} images/s  ratio={mid / base:.3f}  "
              f"(median of {repeats} x {steps} steps; spread {spread:.0%})")
    if args.json:
        record = {"preset": args.preset, "precision": args.precision, "threads": torch.get_num_threads(),
                  "steps": steps, "repeats": repeats, "baseline": names[0], "variants": rows,
                  "command": "python benchmarks/train_step.py " + " ".join(sys.argv[1:])}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2))
        print(args.json)


# --------------------------------------------------------------------------------------------
# --mode monitor: the cpu-live SimCLR step with the online monitor / without
# --------------------------------------------------------------------------------------------
def time_loop_steps(trainer: Trainer, first_step: int, steps: int) -> float:
    """Seconds per step of ``train_step(step, next_batch(step))``, as the loop runs them."""
    synchronize(trainer.device)
    start = time.perf_counter()
    for step in range(first_step, first_step + steps):
        metrics = trainer.train_step(step, trainer.next_batch(step))
    float(metrics["loss"])
    synchronize(trainer.device)
    return (time.perf_counter() - start) / steps


def mode_monitor(args) -> None:
    from equimod_edu.monitor import OnlineMonitor

    steps, repeats = args.steps or 10, args.repeats or 5
    with tempfile.TemporaryDirectory() as tmp:
        monitor = OnlineMonitor(rows=args.monitor_rows)
        trainers = {}
        for name in ("plain", "monitor"):
            cfg = TrainConfig.preset("cpu-live", equimod=False, out_dir=f"{tmp}/{name}", progress=False,
                                     device=args.device)
            trainers[name] = Trainer(cfg, callbacks=[monitor] if name == "monitor" else [])
        t = trainers["monitor"]
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, preset cpu-live "
              f"SimCLR, batch {t.cfg.batch_size}, bf16 {t.bf16}, monitor columns {monitor.columns}")
        for trainer in trainers.values():
            time_loop_steps(trainer, 0, args.warmup)
        times = {name: [] for name in trainers}
        for r in range(repeats):  # alternate, and swap who goes first, so slow moments hit both
            for name in (("plain", "monitor") if r % 2 == 0 else ("monitor", "plain")):
                times[name].append(time_loop_steps(trainers[name], args.warmup + r * steps, steps))
        for _ in range(repeats):
            monitor.epoch_end(t.model, t.augmenter, t.bf16)  # what the monitor runs at each epoch end
        knn = monitor.knn_seconds[-repeats:]
    result = {name: median_and_spread(times[name]) for name in times}
    for name, (mid, spread) in result.items():
        print(f"{name:>8}: {mid * 1e3:7.1f} ms/step  (median of {repeats} x {steps} steps; spread {spread:.0%})")
    knn_mid, knn_spread = median_and_spread(knn)
    epoch = result["plain"][0] * t.steps_per_epoch
    print(f"kNN at an epoch end ({len(monitor.bank)} bank + {len(monitor.test)} test images): {knn_mid:.2f} s "
          f"(median of {repeats}; spread {knn_spread:.0%}) = {knn_mid / epoch:.1%} of a {t.steps_per_epoch}-step "
          f"epoch ({epoch:.1f} s)")
    print(f"ratio={result['monitor'][0] / result['plain'][0]:.3f}")


# --------------------------------------------------------------------------------------------
# --mode epoch: the per-image torchvision DataLoader pipeline / the Trainer's batched path
# --------------------------------------------------------------------------------------------
class OfficialStyleDataset(torch.utils.data.Dataset):
    """Per-image pipeline over uint8 (N, H, W, 3) arrays: x_o, (x_1, t_1), (x_2, t_2).

    t_k is the raw parameter row in ``equimod_edu.augment.raw_vector``'s layout (crop as
    fractions, flip, jitter, order x4, brightness, contrast, saturation, hue, grayscale: 15
    values), or zeros with ``capture=False`` (then the views come from the plain Compose).
    """

    def __init__(self, images_hwc, aug, capture: bool = True):
        from torchvision import transforms as T

        self.images, self.aug, self.capture, self.T = images_hwc, aug, capture, T
        self.to_tensor = T.Compose([T.ToTensor(), T.Normalize(aug.mean, aug.std)])
        self.jitter = T.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue)
        self.compose = T.Compose([
            T.RandomResizedCrop(aug.size, scale=aug.crop_scale, ratio=aug.crop_ratio,
                                interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(aug.flip_p),
            T.RandomApply([self.jitter], p=aug.jitter_p),
            T.RandomGrayscale(aug.gray_p),
            self.to_tensor,
        ])

    def __len__(self):
        return len(self.images)

    def view_with_params(self, image):
        """The Compose above, spelled out with get_params so every parameter is recorded."""
        T, F, aug = self.T, self.T.functional, self.aug
        width, height = image.size
        top, left, h, w = T.RandomResizedCrop.get_params(image, aug.crop_scale, aug.crop_ratio)
        image = F.resized_crop(image, top, left, h, w, [aug.size, aug.size], T.InterpolationMode.BICUBIC)
        flip = torch.rand(1).item() < aug.flip_p
        if flip:
            image = F.hflip(image)
        jitter = torch.rand(1).item() < aug.jitter_p
        order, factors = [0, 1, 2, 3], [1.0, 1.0, 1.0, 0.0]
        if jitter:
            order, *factors = T.ColorJitter.get_params(self.jitter.brightness, self.jitter.contrast,
                                                       self.jitter.saturation, self.jitter.hue)
            ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
            for op_index in order.tolist():
                image = ops[op_index](image, factors[op_index])
            order = order.tolist()
        gray = torch.rand(1).item() < aug.gray_p
        if gray:
            image = F.rgb_to_grayscale(image, num_output_channels=3)
        t = torch.tensor([top / height, left / width, h / height, w / width, flip, jitter, *order,
                          *factors, gray], dtype=torch.float32)
        return self.to_tensor(image), t

    def __getitem__(self, index):
        from PIL import Image

        image = Image.fromarray(self.images[index])
        x_o = self.to_tensor(image)
        if self.capture:
            (x_1, t_1), (x_2, t_2) = self.view_with_params(image), self.view_with_params(image)
        else:
            x_1, x_2 = self.compose(image), self.compose(image)
            t_1 = t_2 = torch.zeros(self.aug.encoded_dim)
        return x_o, x_1, x_2, t_1, t_2


def baseline_epoch(trainer: Trainer, loader, first_step: int, capture: bool) -> float:
    """Seconds for one pass of `loader`, each batch trained on by `trainer`'s step."""
    from equimod_edu.augment import encoding_stats

    mean, std = encoding_stats(trainer.aug)
    step = first_step
    start = time.perf_counter()
    for x_o, x_1, x_2, t_1, t_2 in loader:  # a new iterator: worker start-up counts, as each epoch
        if capture:  # standardise the captured raw rows exactly as AugmentationConfig.encode does
            t_1, t_2 = (t_1 - mean) / std, (t_2 - mean) / std
        x_o, x_1, x_2, t_1, t_2 = (x.to(trainer.device) for x in (x_o, x_1, x_2, t_1, t_2))
        batch = Batch(x_o=x_o if trainer.objective.needs.x_o else None, x_1=x_1, x_2=x_2, t_1=t_1, t_2=t_2)
        metrics = trainer.train_step(step, batch)  # the loader made the views; train_step lays them out
        step += 1
    float(metrics["loss"])
    synchronize(trainer.device)
    return time.perf_counter() - start


def ours_epoch(trainer: Trainer, epoch: int) -> float:
    """Seconds for one epoch of the Trainer's device-resident path (as Trainer.epochs runs it)."""
    synchronize(trainer.device)
    start = time.perf_counter()
    for step in range(epoch * trainer.steps_per_epoch, (epoch + 1) * trainer.steps_per_epoch):
        metrics = trainer.train_step(step, trainer.next_batch(step))
    float(metrics["loss"])
    synchronize(trainer.device)
    return time.perf_counter() - start


def mode_epoch(args) -> None:
    header(args)
    repeats, capture = args.repeats or 3, args.baseline_params == "capture"
    data = random_dataset(args.images)
    images_hwc = data.images.permute(0, 2, 3, 1).contiguous().numpy()  # the same images, HWC
    with tempfile.TemporaryDirectory() as tmp:
        ours = make_trainer(args, data, f"{tmp}/ours")
        base = make_trainer(args, data, f"{tmp}/base")
        loader = torch.utils.data.DataLoader(
            OfficialStyleDataset(images_hwc, base.aug, capture), batch_size=args.batch, shuffle=True,
            num_workers=args.workers, drop_last=True)
        steps = len(data) // args.batch
        warm = data.images[: args.batch]
        for t in (ours, base):  # warm-up: allocator, the encoding statistics cache
            time_steps(t, warm, 0, args.warmup)
        times = {"base": [], "ours": []}
        for r in range(repeats):
            for name in (("base", "ours") if r % 2 == 0 else ("ours", "base")):
                if name == "base":
                    times[name].append(baseline_epoch(base, loader, args.warmup + r * steps, capture))
                else:
                    times[name].append(ours_epoch(ours, r + 1))
    n = steps * args.batch
    print(f"{n} images per epoch ({steps} steps of {args.batch}); baseline: DataLoader num_workers="
          f"{args.workers}, parameters {args.baseline_params}")
    result = {}
    for name, label in (("base", "baseline (per-image PIL DataLoader)"), ("ours", "ours (batched, on device)  ")):
        mid, spread = median_and_spread(times[name])
        result[name] = mid
        print(f"{label}: {mid:7.2f} s/epoch  {n / mid:7.0f} images/s  (median of {repeats}; "
              f"spread {spread:.0%}; all {', '.join(f'{x:.2f}' for x in times[name])} s)")
    print(f"ratio={result['base'] / result['ours']:.3f}")


# --------------------------------------------------------------------------------------------
# --mode gpu-epoch: seconds per 50k-image EquiMod epoch, fast or plain settings
# --------------------------------------------------------------------------------------------
def count_host_syncs(trainer: Trainer, step: int) -> tuple[int, str]:
    """Host synchronisations during one training step, the batch gather included (CUDA only).

    Returns their count and the first message. The CPU test
    tests/test_train.py::test_a_training_step_on_the_cuda_path_makes_no_host_synchronisation
    checks the same step for the syncs a CPU can see; this counts every one.
    """
    trainer.batch_indices(step // trainer.steps_per_epoch, trainer.device)  # the epoch's order: one copy per epoch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_step(step, trainer.next_batch(step))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    return len(syncs), (syncs[0].splitlines()[0] if syncs else "")


def mode_gpu_epoch(args) -> None:
    header(args)
    fast = args.setting == "fast"
    settings = dict(precision="bf16" if fast else "fp32", channels_last=fast, compile=fast)
    print(f"setting {args.setting}: {settings}; TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
          f"cudnn TF32 {torch.backends.cudnn.allow_tf32}")
    data = random_dataset(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        base = dict(base="byol", augment="byol_cifar10", lr=2.0, z_dim=256) if args.base == "byol" else {}
        trainer = make_trainer(args, data, f"{tmp}/run", epochs=800, warmup_epochs=10, **settings, **base)
        steps_per_epoch = trainer.steps_per_epoch
        timed = min(args.steps or steps_per_epoch, steps_per_epoch)
        indices = trainer.batch_indices(0)

        def batch(step):  # as Trainer.epochs: a gather from the device-resident dataset
            return trainer.data.images[indices[step % steps_per_epoch]]

        synchronize(trainer.device)
        print(f"set-up (model, {len(data)} images to {trainer.device}): {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        for step in range(args.warmup):
            float(trainer.train_step(step, trainer.make_batch(batch(step), step))["loss"])
        print(f"warm-up ({args.warmup} steps{', compile included' if fast else ''}): "
              f"{time.perf_counter() - start:.1f} s")
        synchronize(trainer.device)
        start = time.perf_counter()
        for step in range(args.warmup, args.warmup + timed):
            metrics = trainer.train_step(step, trainer.make_batch(batch(step), step))
        loss = float(metrics["loss"])
        synchronize(trainer.device)
        per_step = (time.perf_counter() - start) / timed
        start = time.perf_counter()  # the augmentation alone: the gather and the views of the same steps
        for step in range(args.warmup, args.warmup + timed):
            views = trainer.make_batch(batch(step), step)
        float(views.x_1[0, 0, 0, 0])
        synchronize(trainer.device)
        augment_share = (time.perf_counter() - start) / timed / per_step
        if trainer.device.type == "cuda":
            count, first = count_host_syncs(trainer, args.warmup + timed)
            print(f"host synchronisations in one step: {count}" + (f" (first: {first})" if count else ""))
            print(f"peak GPU memory: {torch.cuda.max_memory_allocated(trainer.device) / 2**30:.1f} GiB")
    epoch = per_step * steps_per_epoch
    print(f"{args.base}+EquiMod, {timed} timed steps of {args.batch} (loss {loss:.3f}): {per_step * 1e3:.1f} ms/step, "
          f"{args.batch / per_step:,.0f} images/s; the augmentation alone: {augment_share:.0%} of a step")
    print(f"EquiMod {args.backbone} epoch of {steps_per_epoch * args.batch} images ({steps_per_epoch} steps, "
          f"{'extrapolated from ' + str(timed) + ' steps' if timed < steps_per_epoch else 'measured'}): "
          f"{epoch:.2f} s")
    print(f"seconds_per_epoch={epoch:.3f}")


def mode_linear_eval(args) -> None:
    """Seconds of one epoch of the paper's SGD linear evaluation (``probes.linear_eval_sgd``).

    On --images random CIFAR-sized images with a ResNet-18 (random weights: the speed does not
    depend on them).
    """
    from equimod_edu.models import EquiModModel
    from equimod_edu.probes import linear_eval_sgd

    header(args)
    data = random_dataset(args.images)
    cfg = TrainConfig(backbone=args.backbone, dataset="cifar10", augment="cifar10", device=args.device)
    model = EquiModModel(cfg.model_config()).to(args.device)
    test = data.subset(slice(0, min(len(data), 10_000)))
    start = time.perf_counter()
    result = linear_eval_sgd(model, data, test, cfg.augmentation(), epochs=1, batch_size=256)
    synchronize(args.device)
    seconds = time.perf_counter() - start
    print(f"one epoch of linear_eval_sgd on {len(data)} images (+ testing {len(test)}): {seconds:.1f} s "
          f"(train loss {result['train_loss']:.3f})")
    print(f"seconds_per_linear_eval_epoch={seconds:.3f}")


# --------------------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("step", "variants", "monitor", "epoch", "gpu-epoch", "linear-eval"),
                        default="step")
    parser.add_argument("--variants", default="simclr,equimod,augself,cassle,essl,care",
                        help="variants mode: compare variants, the first is the baseline")
    parser.add_argument("--preset", default="cpu-live", help="variants mode: the TrainConfig preset")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="variants mode: TrainConfig.precision of every variant")
    parser.add_argument("--json", default=None, help="variants mode: also write the times and ratios to this file")
    parser.add_argument("--base", choices=("simclr", "byol"), default="simclr", help="gpu-epoch: the base method")
    parser.add_argument("--device", default=None, help="cpu | cuda[:i] (default: cpu; cuda for gpu-epoch)")
    parser.add_argument("--backbone", default=None, choices=("convnet", "resnet18", "resnet50"),
                        help="default: convnet on CPU, resnet18 on CUDA")
    parser.add_argument("--batch", type=int, default=None, help="default: 256 (512 for gpu-epoch)")
    parser.add_argument("--proj-hidden", type=int, default=None, help="head width (default 512 convnet, 2048 else)")
    parser.add_argument("--steps", type=int, default=None,
                        help="step: steps per timed block (5); gpu-epoch: timed steps (default a whole epoch)")
    parser.add_argument("--repeats", type=int, default=None, help="alternating blocks/epochs (step 5, epoch 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (2; gpu-epoch 3)")
    parser.add_argument("--images", type=int, default=None, help="epoch: 2048; gpu-epoch: 50000")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads of this process (default: torch's choice)")
    parser.add_argument("--monitor-rows", type=int, default=8, help="monitor: images a step the online probe reads")
    parser.add_argument("--workers", type=int, default=2, help="epoch: baseline DataLoader workers")
    parser.add_argument("--baseline-params", choices=("capture", "zeros"), default="capture")
    parser.add_argument("--setting", choices=("fast", "plain"), default="fast",
                        help="gpu-epoch: fast = bf16 + channels_last + compile; plain = fp32, NCHW, eager")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu_epoch = args.mode in ("gpu-epoch", "linear-eval")
    args.device = args.device or ("cuda" if gpu_epoch and torch.cuda.is_available() else "cpu")
    args.backbone = args.backbone or ("resnet18" if args.device.startswith("cuda") else "convnet")
    args.batch = args.batch or (512 if gpu_epoch else 256)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu_epoch else 2)
    args.images = args.images or (50_000 if gpu_epoch else 2048)
    modes = {"step": mode_step, "variants": mode_variants, "monitor": mode_monitor, "epoch": mode_epoch,
             "gpu-epoch": mode_gpu_epoch,
             "linear-eval": mode_linear_eval}
    modes[args.mode](args)


if __name__ == "__main__":
    main()
