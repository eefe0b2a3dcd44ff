"""equimod_edu: learn, run and measure EquiMod (Devillers & Lefort, ICLR 2023, arXiv 2211.01244).

How data flows through the modules (README.md's "Layout" lists every module in import order):
    data (synthetic, dataset, loader) -> augment (recipes) -> models -> losses -> train (config, optim,
    checkpoint) -> probes, equivariance -> report; figures and widgets show the results; compare trains
    and evaluates variants over seeds; pretrained ships the reference models.
"""

__version__ = "0.1.0"
