"""Backbones and heads; the EquiMod model for a SimCLR or a BYOL base.

EquiMod (Devillers & Lefort, ICLR 2023, arXiv 2211.01244) adds an *equivariance branch* to an
invariant self-supervised method. For an image x, its original x_o and two augmented views
(x_1, t_1), (x_2, t_2) where t_k is the (encoded) parameter vector of the augmentation:

    h_k     = f(x_k)                        backbone f, one forward for x_o, x_1, x_2
    z_k     = g(h_k)                        invariance projector (SimCLR g, or BYOL projector)
    y_k     = g'(h_k)                       equivariance projector g' (or y = h when switched off)
    y_hat_k = u([y_o ; p(t_k)])             predictor u, parameter encoder p

The losses (``losses.py``) pull z_1 and z_2 together (invariance) and y_hat_k towards y_k
(equivariance: the module predicts how the augmentation t_k moves the embedding of x_o).

Every head is a ``ProjectionHead`` built from a short list of blocks
``(in_dim, out_dim, norm, activation)``, so each architecture of the paper reads as data.
Inputs of the model are already-augmented, normalised float images ``(N, 3, H, W)`` and
encoded parameter vectors ``(N, P) float`` (P = ``AugmentationConfig.encoded_dim``).

Example::

    cfg = ModelConfig(backbone="convnet", base="simclr", param_dim=15)
    model = EquiModModel(cfg)
    out = model(x_o, x_1, x_2, t_1, t_2)      # out.z_1, out.y_1, out.y_hat_1, ... (N, D)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields
from typing import Callable, NamedTuple, Optional, Sequence

import torch
import torchvision
from torch import Tensor, nn

__all__ = [
    "BACKBONES",
    "BASES",
    "ConvNet",
    "build_backbone",
    "ProjectionHead",
    "SimCLRProjectionHead",
    "EquivarianceProjectionHead",
    "BYOLProjectionHead",
    "BYOLPredictionHead",
    "ParameterEncoder",
    "EquivariantPredictor",
    "ModelConfig",
    "ModelOutput",
    "Embeddings",
    "SPACES",
    "EquiModModel",
    "byol_momentum",
    "model_device",
    "resolve_device",
    "batched",
    "cosine",
]

BACKBONES = ("convnet", "resnet18", "resnet50")
BASES = ("simclr", "byol")


# --------------------------------------------------------------------------------------------
# Backbones f: images (N, 3, H, W) float -> features h (N, D) float
# --------------------------------------------------------------------------------------------


class ConvNet(nn.Module):
    """Small CPU backbone: 4 blocks conv3x3-BN-ReLU, then global average pooling.

    Widths ``w, 2w, 4w, 8w`` and strides ``1, 2, 2, 2``; ``feature_dim = 8w`` (256 for w=32).
    Not from the paper: it makes the method trainable in minutes on a laptop CPU.

    Shapes: ``(N, 3, H, W) float -> (N, 8w) float``.

    Example::

        >>> ConvNet()(torch.randn(4, 3, 32, 32)).shape
        torch.Size([4, 256])
    """

    def __init__(self, width: int = 32, in_channels: int = 3):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        widths = (width, 2 * width, 4 * width, 8 * width)
        strides = (1, 2, 2, 2)
        blocks, last = [], in_channels
        for w, s in zip(widths, strides):
            blocks += [
                nn.Conv2d(last, w, kernel_size=3, stride=s, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
            ]
            last = w
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = last

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


def _resnet18_cifar() -> nn.Module:
    """ResNet-18 with the CIFAR stem used by EquiMod (and SimCLR) on 32x32 images.

    The 7x7 stride-2 first conv becomes 3x3 stride 1 and the max-pool is removed, so a 32x32
    image reaches layer4 as 4x4. Residual branches end with a zero-initialised BatchNorm
    (``zero_init_residual=True``: each block starts as the identity). ``fc`` is removed.
    """
    net = torchvision.models.resnet18(weights=None, zero_init_residual=True)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def _resnet50_imagenet() -> nn.Module:
    """ResNet-50 with the ImageNet stem and zero-initialised residuals; ``fc`` removed."""
    net = torchvision.models.resnet50(weights=None, zero_init_residual=True)
    net.fc = nn.Identity()
    return net


def build_backbone(name: str) -> tuple[nn.Module, int]:
    """Build the backbone f by name and return ``(module, feature_dim)``.

    ``"convnet"`` -> ``ConvNet`` (256), ``"resnet18"`` -> ResNet-18 with the CIFAR stem
    (512), ``"resnet50"`` -> ResNet-50 with the ImageNet stem (2048). The module maps
    ``(N, 3, H, W) float -> (N, feature_dim) float``.
    """
    if name == "convnet":
        net = ConvNet()
        return net, net.feature_dim
    if name == "resnet18":
        return _resnet18_cifar(), 512
    if name == "resnet50":
        return _resnet50_imagenet(), 2048
    raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")


# --------------------------------------------------------------------------------------------
# Heads: a short list of blocks (in_dim, out_dim, norm, activation)
# --------------------------------------------------------------------------------------------

Block = tuple[int, int, Optional[nn.Module], Optional[nn.Module]]


class ProjectionHead(nn.Module):
    """A stack of ``Linear -> [norm] -> [activation]`` blocks, given as data.

    Each block is ``(in_dim, out_dim, norm, activation)``; ``norm`` and ``activation`` may be
    ``None``. A Linear followed by a BatchNorm has no bias (the norm's shift replaces it), as
    in the official EquiMod code.

    Shapes: ``(N, blocks[0].in_dim) float -> (N, blocks[-1].out_dim) float``.

    Example::

        >>> head = ProjectionHead([(8, 16, nn.BatchNorm1d(16), nn.ReLU()), (16, 4, None, None)])
        >>> head(torch.randn(5, 8)).shape
        torch.Size([5, 4])
    """

    def __init__(self, blocks: Sequence[Block]):
        super().__init__()
        if len(blocks) == 0:
            raise ValueError("blocks must not be empty")
        layers: list[nn.Module] = []
        for in_dim, out_dim, norm, activation in blocks:
            layers.append(nn.Linear(in_dim, out_dim, bias=norm is None))
            if norm is not None:
                layers.append(norm)
            if activation is not None:
                layers.append(activation)
        self.layers = nn.Sequential(*layers)
        self.in_dim = blocks[0][0]
        self.out_dim = blocks[-1][1]

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class SimCLRProjectionHead(ProjectionHead):
    """SimCLR projector g: the contrastive loss is applied to z = g(h), not to h.

    SimCLR (Chen et al., 2020) found that a non-linear projection before the loss keeps more
    information in h. The official EquiMod code uses Linear-BN-ReLU twice (2048 wide), then a
    Linear to ``output_dim`` (128 on CIFAR-10) and a BatchNorm without affine parameters.

    Shapes: ``(N, input_dim) float -> (N, output_dim) float``.

    Example::

        >>> SimCLRProjectionHead(256, hidden_dim=64, output_dim=16)(torch.randn(4, 256)).shape
        torch.Size([4, 16])
    """

    def __init__(self, input_dim: int, hidden_dim: int = 2048, output_dim: int = 128):
        super().__init__([
            (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
            (hidden_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
            (hidden_dim, output_dim, nn.BatchNorm1d(output_dim, affine=False), None),
        ])


class EquivarianceProjectionHead(SimCLRProjectionHead):
    """Equivariance projector g': y = g'(h), the space where EquiMod predicts displacements.

    The paper projects h with a head separate from the invariance one so that the equivariant
    latent space does not have to be the invariant one. Same shape as the SimCLR projector
    (Linear-BN-ReLU x2, 2048 wide, Linear to ``output_dim`` = 128, BN without affine) for both
    the SimCLR and BYOL bases.

    Shapes: ``(N, input_dim) float -> (N, output_dim) float``.
    """


class BYOLProjectionHead(ProjectionHead):
    """BYOL projector: Linear(4096)-BN-ReLU-Linear(256) (Grill et al., 2020).

    Used for the online projector and, as an EMA copy, for the target projector.

    Shapes: ``(N, input_dim) float -> (N, output_dim) float``.

    Example::

        >>> BYOLProjectionHead(256, hidden_dim=32, output_dim=8)(torch.randn(4, 256)).shape
        torch.Size([4, 8])
    """

    def __init__(self, input_dim: int, hidden_dim: int = 4096, output_dim: int = 256):
        super().__init__([
            (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
            (hidden_dim, output_dim, None, None),
        ])


class BYOLPredictionHead(BYOLProjectionHead):
    """BYOL predictor q: the online network predicts the target's projection of the other view.

    Same shape as the projector: Linear(4096)-BN-ReLU-Linear(256); it only exists on the online
    side, and this asymmetry (with the EMA target) is what keeps BYOL from collapsing.

    Shapes: ``(N, input_dim) float -> (N, output_dim) float``.
    """


class ParameterEncoder(ProjectionHead):
    """Parameter encoder p(t) = BN(Linear(t)) (paper, section 3).

    The augmentation parameters t (crop box, flip, jitter factors and order, ...) are embedded
    before being given to the predictor, to the same width as y (128) in the paper.

    Shapes: ``(N, param_dim) float -> (N, embed_dim) float``.

    Example::

        >>> ParameterEncoder(15, 128)(torch.randn(4, 15)).shape
        torch.Size([4, 128])
    """

    def __init__(self, param_dim: int, embed_dim: int = 128):
        super().__init__([(param_dim, embed_dim, nn.BatchNorm1d(embed_dim), None)])


class EquivariantPredictor(ProjectionHead):
    """Equivariant predictor u: y_hat_k = u([y_o ; p(t_k)]) (paper, equation of the module).

    From the embedding y_o of the original image and the encoded parameters of the
    augmentation, u predicts the embedding y_k of the augmented view: it learns how t_k moves
    points of the equivariant latent space. The paper's u is a single Linear followed by a
    BatchNorm without affine (``depth=0``); ``depth=d > 0`` inserts d hidden blocks
    Linear-BN-ReLU of width ``hidden_dim`` (an MLP predictor, our extension).

    Shapes: ``(N, y_dim + embed_dim) float -> (N, y_dim) float``.

    Example::

        >>> u = EquivariantPredictor(y_dim=128, embed_dim=128)
        >>> u(torch.randn(4, 256)).shape
        torch.Size([4, 128])
    """

    def __init__(self, y_dim: int, embed_dim: int, depth: int = 0, hidden_dim: int = 512):
        blocks: list[Block] = []
        last = y_dim + embed_dim
        for _ in range(depth):
            blocks.append((last, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()))
            last = hidden_dim
        blocks.append((last, y_dim, nn.BatchNorm1d(y_dim, affine=False), None))
        super().__init__(blocks)
        self.depth = depth


# --------------------------------------------------------------------------------------------
# Configuration and outputs
# --------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Everything that defines an ``EquiModModel``; every ablation of the paper is a field.

    Defaults are the paper's CIFAR-10 SimCLR+EquiMod heads on the small ConvNet backbone.

    - ``backbone``: ``"convnet" | "resnet18" | "resnet50"``; ``base``: ``"simclr" | "byol"``.
    - ``equimod``: add the equivariance branch (off: plain SimCLR / BYOL).
    - ``param_dim``: P, length of the encoded parameter vectors t.
    - ``z_dim``: output of the invariance projector g (SimCLR's z; BYOL's projection, and its
      predictor's output); ``proj_hidden``: SimCLR's g and g' hidden width; ``y_dim``: output of
      g'; ``param_embed_dim``: output of p.
    - ``equi_projector``: g' on/off (off: y = h and ``y_dim`` is ignored).
    - ``param_encoder``: p on/off (off: the raw t is concatenated to y_o).
    - ``predictor_depth``, ``predictor_hidden``: hidden blocks of u (0: the paper's Linear).
    - ``param_mask``: P booleans, which entries of t u sees (the others are zeroed).
    - ``byol_hidden``: BYOL projector and predictor hidden width; ``ema_base``: the
      starting EMA momentum of the BYOL target (see ``byol_momentum``).
    """

    backbone: str = "convnet"
    base: str = "simclr"
    equimod: bool = True
    param_dim: int = 15
    z_dim: int = 128
    proj_hidden: int = 2048
    y_dim: int = 128
    param_embed_dim: int = 128
    equi_projector: bool = True
    param_encoder: bool = True
    predictor_depth: int = 0
    predictor_hidden: int = 512
    param_mask: Optional[tuple[bool, ...]] = None
    byol_hidden: int = 4096
    ema_base: float = 0.996

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.base not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {self.base!r}")
        for name in ("equimod", "equi_projector", "param_encoder"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("param_dim", "z_dim", "proj_hidden", "y_dim", "param_embed_dim",
                     "predictor_hidden", "byol_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        depth = self.predictor_depth
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"predictor_depth must be an int >= 0, got {depth!r}")
        if not 0.0 <= float(self.ema_base) <= 1.0:
            raise ValueError(f"ema_base must be in [0, 1], got {self.ema_base!r}")
        if self.param_mask is not None:
            mask = tuple(self.param_mask)
            if len(mask) != self.param_dim:
                raise ValueError(
                    f"param_mask has {len(mask)} entries but param_dim is {self.param_dim}")
            if not all(m in (0, 1) for m in mask):
                raise ValueError(f"param_mask entries must be booleans, got {mask!r}")
            self.param_mask = tuple(bool(m) for m in mask)


@dataclass
class ModelOutput:
    """What ``EquiModModel.forward`` returns; each field ``(N, dim) float`` or ``None``.

    - ``h``: backbone features of every image forwarded, ``(3N, D)`` in the order
      ``[x_o; x_1; x_2]`` with EquiMod, ``(2N, D)`` as ``[x_1; x_2]`` without.
    - ``z_1, z_2``: invariance projections of the two views.
    - BYOL only: ``p_1, p_2`` online predictions; ``target_z_1, target_z_2`` target
      projections (no gradient).
    - EquiMod only: ``y_o, y_1, y_2`` equivariant embeddings; ``y_hat_1, y_hat_2`` predictions
      u([y_o ; p(t_k)]).
    """

    h: Tensor
    z_1: Tensor
    z_2: Tensor
    p_1: Optional[Tensor] = None
    p_2: Optional[Tensor] = None
    target_z_1: Optional[Tensor] = None
    target_z_2: Optional[Tensor] = None
    y_o: Optional[Tensor] = None
    y_1: Optional[Tensor] = None
    y_2: Optional[Tensor] = None
    y_hat_1: Optional[Tensor] = None
    y_hat_2: Optional[Tensor] = None

    def as_dict(self) -> dict[str, Optional[Tensor]]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Embeddings(NamedTuple):
    """What ``EquiModModel.embed`` returns for images ``(N, 3, H, W)``: each ``(N, dim) float``.

    ``h`` backbone features, ``z`` invariance projection (SimCLR g or BYOL's online projector),
    ``y`` the equivariant projection g'(h) (``h`` itself when g' is switched off), ``None``
    without EquiMod. A NamedTuple: ``model.embed(x).y`` and ``h, z, y = model.embed(x)`` both work.
    """

    h: Tensor
    z: Tensor
    y: Optional[Tensor]


#: The embedding spaces a model offers, by name (see ``EquiModModel.embedder``).
SPACES = ("h", "z", "y")


def byol_momentum(step: int, total_steps: int, base: float = 0.996) -> float:
    """BYOL's cosine EMA schedule: tau = 1 - (1 - base) (cos(pi step / total_steps) + 1) / 2.

    Goes from ``base`` at step 0 to 1 at ``total_steps`` (Grill et al., 2020, section 3.2).

    Example::

        >>> byol_momentum(0, 100), byol_momentum(100, 100)
        (0.996, 1.0)
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"base must be in [0, 1], got {base}")
    progress = min(max(step / total_steps, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class EquiModModel(nn.Module):
    """EquiMod on a SimCLR or BYOL base: backbone f, invariance heads, equivariance module.

    Modules (``None`` where a switch removes them):

    - ``backbone`` f; ``projector`` g (SimCLR head, or BYOL projector);
    - BYOL: ``byol_predictor`` q, ``target_backbone`` and ``target_projector`` (EMA copies,
      ``requires_grad=False``; give the optimiser only parameters that require grad);
    - EquiMod: ``equi_projector`` g', ``param_encoder`` p, ``predictor`` u and the buffer
      ``param_mask`` ``(P,) float`` of 0/1.

    Example::

        >>> model = EquiModModel(ModelConfig(proj_hidden=64, param_embed_dim=16))
        >>> x = torch.randn(4, 3, 16, 16); t = torch.randn(4, 15)
        >>> out = model(x, x, x, t, t)
        >>> out.z_1.shape, out.y_hat_1.shape
        (torch.Size([4, 128]), torch.Size([4, 128]))
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone, self.feature_dim = build_backbone(cfg.backbone)
        self._build_invariance_heads(cfg)
        self._build_equivariance_module(cfg)

    # -- construction ------------------------------------------------------------------------

    def _build_invariance_heads(self, cfg: ModelConfig) -> None:
        self.byol_predictor = self.target_backbone = self.target_projector = None
        if cfg.base == "simclr":
            self.projector = SimCLRProjectionHead(self.feature_dim, cfg.proj_hidden, cfg.z_dim)
            return
        self.projector = BYOLProjectionHead(self.feature_dim, cfg.byol_hidden, cfg.z_dim)
        self.byol_predictor = BYOLPredictionHead(cfg.z_dim, cfg.byol_hidden, cfg.z_dim)
        self.target_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def _build_equivariance_module(self, cfg: ModelConfig) -> None:
        self.equi_projector = self.param_encoder = self.predictor = None
        self.register_buffer("param_mask", None)
        self.y_dim = None
        if not cfg.equimod:
            return
        if cfg.equi_projector:
            self.equi_projector = EquivarianceProjectionHead(
                self.feature_dim, cfg.proj_hidden, cfg.y_dim)
            self.y_dim = cfg.y_dim
        else:
            self.y_dim = self.feature_dim  # y = h
        embed_dim = cfg.param_dim
        if cfg.param_encoder:
            self.param_encoder = ParameterEncoder(cfg.param_dim, cfg.param_embed_dim)
            embed_dim = cfg.param_embed_dim
        self.predictor = EquivariantPredictor(
            self.y_dim, embed_dim, cfg.predictor_depth, cfg.predictor_hidden)
        if cfg.param_mask is not None:
            self.param_mask = torch.tensor(cfg.param_mask, dtype=torch.float32)

    # -- building blocks used by forward and by evaluation ------------------------------------

    def features(self, x: Tensor) -> Tensor:
        """Backbone features h = f(x): ``(N, 3, H, W) float -> (N, D) float``."""
        return self.backbone(x)

    def _equivariant(self, h: Tensor) -> Tensor:
        """The equivariant embedding y = g'(h), or y = h when g' is switched off: ``(N, D) -> (N, y_dim)``."""
        return h if self.equi_projector is None else self.equi_projector(h)

    def embed(self, x: Tensor) -> Embeddings:
        """``Embeddings(h, z, y)`` for images ``(N, 3, H, W)``; y is ``None`` without EquiMod."""
        h = self.features(x)
        y = self._equivariant(h) if self.cfg.equimod else None
        return Embeddings(h, self.projector(h), y)

    def embedder(self, space: str) -> Callable[[Tensor], Tensor]:
        """The function x ``(N, 3, S, S)`` normalised -> ``(N, D)`` embedding in `space`.

        "h": backbone features; "z": invariance projection; "y": EquiMod's equivariant
        projection g' (needs the module; a model without one is scored in "h" or "z" with a
        post-hoc predictor, see ``equivariance.fit_posthoc_predictor``).
        """
        if space == "h":
            return self.features
        if space == "z":
            return lambda x: self.projector(self.features(x))
        if space == "y":
            if not self.cfg.equimod:
                raise ValueError("space='y' needs the equivariance module (cfg.equimod is False); "
                                 "use space='h' or 'z' with a post-hoc predictor")
            return lambda x: self._equivariant(self.features(x))
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")

    def predict(self, y_o: Tensor, t: Tensor) -> Tensor:
        """Equivariant prediction y_hat = u([y_o ; p(t * mask)]).

        Shapes: ``y_o (N, y_dim) float``, ``t (N, P) float`` -> ``(N, y_dim) float``.
        Masked entries of t are zeroed before the encoder, so u cannot see them.
        """
        if self.predictor is None:
            raise ValueError("predict needs the equivariance module: cfg.equimod is False")
        if t.dim() != 2 or t.shape[1] != self.cfg.param_dim:
            raise ValueError(
                f"t must have shape (N, param_dim={self.cfg.param_dim}), got {tuple(t.shape)}")
        if self.param_mask is not None:
            t = t * self.param_mask.to(t.dtype)
        e = t if self.param_encoder is None else self.param_encoder(t)
        return self.predictor(torch.cat([y_o, e.to(y_o.dtype)], dim=1))

    # -- forward --------------------------------------------------------------------------------

    def forward(self, x_o: Optional[Tensor], x_1: Tensor, x_2: Tensor,
                t_1: Optional[Tensor] = None, t_2: Optional[Tensor] = None) -> ModelOutput:
        """Embed a batch of originals and views.

        Inputs: ``x_o, x_1, x_2 (N, 3, H, W) float`` (normalised; ``x_o`` may be ``None``
        without EquiMod), ``t_1, t_2 (N, P) float`` encoded parameters.
        With EquiMod the 3N images go through the backbone in one forward, so BatchNorm
        statistics are shared by originals and views (as in the official code).
        """
        n = x_1.shape[0]
        if x_2.shape[0] != n:
            raise ValueError(f"x_1 and x_2 differ in batch size: {n} vs {x_2.shape[0]}")
        if self.cfg.equimod:
            if x_o is None or t_1 is None or t_2 is None:
                raise ValueError("with cfg.equimod, x_o, t_1 and t_2 are required")
            h = self.features(torch.cat([x_o, x_1, x_2]))
            h_views = h[n:]
        else:
            h = h_views = self.features(torch.cat([x_1, x_2]))
        z_1, z_2 = self.projector(h_views).split(n)
        out = ModelOutput(h=h, z_1=z_1, z_2=z_2)
        if self.cfg.base == "byol":
            self._byol_heads(out, torch.cat([z_1, z_2]), torch.cat([x_1, x_2]), n)
        if self.cfg.equimod:
            self._equivariance_branch(out, h, t_1, t_2, n)
        return out

    def _byol_heads(self, out: ModelOutput, z: Tensor, x_views: Tensor, n: int) -> None:
        """Online predictions p_k = q(z_k) and target projections (no gradient)."""
        out.p_1, out.p_2 = self.byol_predictor(z).split(n)
        with torch.no_grad():
            target_z = self.target_projector(self.target_backbone(x_views)).detach()
        out.target_z_1, out.target_z_2 = target_z.split(n)

    def _equivariance_branch(self, out: ModelOutput, h: Tensor, t_1: Tensor, t_2: Tensor,
                             n: int) -> None:
        """The equivariant branch: y = g'(h) for all 3N images; y_hat_k = u([y_o ; p(t_k)]) for both views."""
        y_o, y_1, y_2 = self._equivariant(h).split(n)
        y_hat = self.predict(torch.cat([y_o, y_o]), torch.cat([t_1, t_2]))
        out.y_o, out.y_1, out.y_2 = y_o, y_1, y_2
        out.y_hat_1, out.y_hat_2 = y_hat.split(n)

    # -- BYOL target -----------------------------------------------------------------------------

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """BYOL EMA: target <- momentum * target + (1 - momentum) * online (parameters only).

        No-op for SimCLR. The target's BatchNorm running statistics are its own (updated by its
        forward passes), as in the official code. Take ``momentum`` from ``byol_momentum``.
        """
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if self.target_backbone is None:
            return
        pairs = [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]
        for online, target in pairs:
            for p_online, p_target in zip(online.parameters(), target.parameters()):
                p_target.lerp_(p_online.detach(), 1.0 - momentum)


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------
def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def resolve_device(name=None) -> torch.device:
    """A torch.device from "auto" or None (CUDA when available, else the CPU), "cpu", "cuda:1"..."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# Running a model over many images
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int, device=None) -> Tensor:
    """Apply ``fn`` to row chunks of ``x`` and concatenate: ``(N, ...) -> (N, ...)``.

    Each chunk is moved to ``device`` first (default: where ``x`` is).
    """
    return torch.cat([fn(chunk.to(device or chunk.device)) for chunk in x.split(batch_size)])


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity in float32: (N, D), (N, D) -> (N,)."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=1)
