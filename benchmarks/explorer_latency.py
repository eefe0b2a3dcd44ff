"""Seconds per slider move of the explorers, with the shipped checkpoints (target: ~0.3 s on a CPU).

    python benchmarks/explorer_latency.py

Builds notebook 5's DisplacementExplorer (SimCLR with a post-hoc predictor, and EquiMod) and the
AugmentationExplorer, moves the hue and crop sliders, and prints the median and max seconds per
move (compute + figure). The last line is `ratio=<median seconds / 0.3 s target>` (<= 1 meets it).
"""

import statistics

import matplotlib

matplotlib.use("Agg")

from equimod_edu import equivariance, pretrained, widgets  # noqa: E402
from equimod_edu.data import synthetic  # noqa: E402


def moves(explorer, n=10):
    explorer.timings.clear()
    for i in range(n):
        explorer.set(hue=0.02 * i - 0.1, crop_scale=1.0 - 0.05 * i)
    return statistics.median(explorer.timings), max(explorer.timings)


def main():
    simclr, _, _ = pretrained.load_pretrained("simclr")
    equimod, cfg, _ = pretrained.load_pretrained("equimod")
    aug = cfg.augmentation()
    test = synthetic("test")
    posthoc = equivariance.fit_posthoc_predictor(simclr, synthetic("train").images[:512], aug, epochs=3)
    displacement = widgets.DisplacementExplorer(
        {"SimCLR": equivariance.Panel(simclr, posthoc), "EquiMod": equivariance.Panel(equimod)},
        test.images[:16], aug, reference_images=test.images[16:80])
    augmentation = widgets.AugmentationExplorer(test.images[:16], aug)
    displacement.update(), augmentation.update()  # first draw warms matplotlib up
    for name, explorer in (("AugmentationExplorer", augmentation), ("DisplacementExplorer", displacement)):
        median, worst = moves(explorer)
        print(f"{name}: median {median:.3f} s, max {worst:.3f} s per move")
    print(f"ratio={median / 0.3:.2f}")


if __name__ == "__main__":
    main()
