"""Images/s of the batched augmentation engine vs the per-image torchvision (PIL) pipeline.

    python benchmarks/augment.py                  # CPU, 32x32, batch 512
    python benchmarks/augment.py --device cuda    # the engine on a GPU (baseline stays on CPU)
    python benchmarks/augment.py --malloc default # glibc's default malloc thresholds (page faults each batch)

The baseline is what the official EquiMod code and most SSL libraries run per image in DataLoader
workers: PIL image -> RandomResizedCrop(bicubic) -> flip -> ColorJitter(p 0.8) -> Grayscale(p 0.2)
-> ToTensor -> Normalize, with the same CIFAR-10 strengths. Both sides are measured in this run,
in this process, on the same number of threads, in alternating pairs. The last line is
`ratio=<engine / baseline>`, the median of the pairs' ratios.

--malloc keep (default) raises glibc's malloc thresholds first (``allocator.keep_freed_memory``), as the
Trainer does on a CPU: freed batches stay in the process, so the next batch does not page-fault its
memory in again. It is process-wide, so both sides run under it; run ``--malloc default`` in a second
process to see what it buys the engine.
"""

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from equimod_edu.allocator import keep_freed_memory
from equimod_edu.augment import CIFAR10_MEAN, CIFAR10_STD, AugmentationConfig
from equimod_edu.augment_cuda import augmenter_for


def baseline_pipeline(cfg: AugmentationConfig):
    return T.Compose([
        T.RandomResizedCrop(cfg.size, scale=cfg.crop_scale, ratio=cfg.crop_ratio,
                            interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(cfg.flip_p),
        T.RandomApply([T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.jitter_p),
        T.RandomGrayscale(cfg.gray_p),
        T.ToTensor(),
        T.Normalize(CIFAR10_MEAN, CIFAR10_STD),
    ])


def time_baseline(images_hwc: np.ndarray, cfg, seconds: float) -> float:
    """Images/s of the per-image pipeline, including the uint8 -> PIL conversion a dataset does."""
    pipeline = baseline_pipeline(cfg)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for array in images_hwc[:256]:
            pipeline(Image.fromarray(array))
        done += 256
    return done / (time.perf_counter() - start)


def time_engine(images: torch.Tensor, cfg, seconds: float) -> float:
    """Images/s of sample + apply on whole batches (one augmented view per image)."""
    generator = torch.Generator(device=images.device).manual_seed(0)
    augmenter = augmenter_for(cfg, images.device)  # on CUDA: augment_cuda's path, as the trainer

    def step():
        params = cfg.sample(len(images), tuple(images.shape[-2:]), generator, images.device)
        return augmenter.apply(images, params)

    for _ in range(3):  # warm-up (CUDA kernels, allocator)
        step()
    sync = torch.cuda.synchronize if images.is_cuda else (lambda: None)
    sync()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += len(images)
    sync()
    return done / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=5.0, help="time spent measuring each side")
    parser.add_argument("--repeats", type=int, default=5,
                        help="alternating pairs of measurements; the median ratio is kept")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice; use 1 on a machine shared with other jobs)")
    parser.add_argument("--malloc", choices=("keep", "default"), default="keep",
                        help="keep: glibc keeps freed memory for reuse, as the Trainer sets it on a CPU")
    args = parser.parse_args()
    kept = args.malloc == "keep" and keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = AugmentationConfig.cifar10()
    rng = np.random.default_rng(0)
    images_hwc = rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
    images = torch.from_numpy(images_hwc).permute(0, 3, 1, 2).contiguous().to(args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
          f"batch {args.batch}, 32x32, freed memory kept {kept}")

    base, ours = [], []
    for _ in range(args.repeats):  # alternate, so a slow moment of the machine hits both sides of a pair
        base.append(time_baseline(images_hwc, cfg, args.seconds))
        ours.append(time_engine(images, cfg, args.seconds))
    ratios = [o / b for b, o in zip(base, ours)]  # pair by pair: the machine's drift cancels within a pair
    print(f"baseline (per-image PIL + torchvision): {np.median(base):,.0f} images/s (median of {args.repeats})")
    print(f"engine   (batched, {args.device}):            {np.median(ours):,.0f} images/s")
    print(f"pair ratios: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"ratio={np.median(ratios):.2f}")


if __name__ == "__main__":
    main()
