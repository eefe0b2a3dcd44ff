"""equimod_edu: learn, run and measure EquiMod (Devillers & Lefort, ICLR 2023, arXiv 2211.01244).

Modules, in the order data flows through them:
    data -> augment -> models -> losses -> train; evaluate and explore read models and data.
"""

__version__ = "0.1.0"
