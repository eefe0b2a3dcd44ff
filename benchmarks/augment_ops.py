"""Aten ops of one batch's augmentation on the CUDA path, counted on any machine.

    python benchmarks/augment_ops.py                       # cifar10 and byol_cifar10, batch 512
    python benchmarks/augment_ops.py imagenet --batch 64

On CUDA, the trainer augments with `augment_cuda.CudaAugment`: every op on every image, selected
with torch.where (no data-dependent shapes, no host sync). The GPU then runs one kernel or more per
aten op, so the op count of a step is what its launch overhead scales with. This runs that path on
the CPU, what a training step runs for one batch (x_o, two views, encode),
and counts the aten ops with a TorchDispatchMode, after one warm-up step that fills the caches (the
encoding statistics are measured once per config). View ops (select, view, split...) are counted
too; the line says how many ops do more than make a view. Last line per preset: `ops=<count>`.
"""

import argparse
import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from equimod_edu.augment import AugmentationConfig
from equimod_edu.augment_cuda import CudaAugment


class CountOps(TorchDispatchMode):
    """Counts aten ops by name; `views` counts those that only make a view (no kernel on a GPU)."""

    def __init__(self):
        super().__init__()
        self.names = collections.Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names[func.overloadpacket.__name__] += 1
        self.views += func.is_view
        return func(*args, **(kwargs or {}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("presets", nargs="*", default=["cifar10", "byol_cifar10"])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=None, help="input side (default: the preset's, at most 64)")
    args = parser.parse_args(argv)
    for name in args.presets:
        cfg = AugmentationConfig.preset(name)
        side = args.image_size or min(cfg.size, 64)
        images = torch.randint(0, 256, (args.batch, 3, side, side), dtype=torch.uint8)
        generator = torch.Generator().manual_seed(0)
        augmenter = CudaAugment(cfg, "cpu")  # the CUDA path, run on the CPU
        warm = augmenter.views(images, generator)  # warm-up: the encoding statistics, measured once
        augmenter.encode(warm.params_1)
        with CountOps() as count:
            views = augmenter.views(images, generator)
            augmenter.encode(views.params_1), augmenter.encode(views.params_2)
        total = sum(count.names.values())
        top = ", ".join(f"{op} {n}" for op, n in count.names.most_common(6))
        print(f"{name}: batch {args.batch}, {side}x{side} inputs: {total} aten ops for x_o + two views + encode, "
              f"{total - count.views} of them more than a view ({top})")
        print(f"ops={total}")


if __name__ == "__main__":
    main()
