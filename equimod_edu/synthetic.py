"""The synthetic generator: one coloured shape per image, every factor recorded as a label.

    ds = make_synthetic(1000, size=32, seed=0)              # an ImageDataset, target "shape"
    ds = make_synthetic(1000, spec=SyntheticSpec(bg_sat=(0, 1)))   # change a knob (uncached)

The cached, shipped splits come from ``equimod_edu.data.synthetic``; what the set is built
to show, and the design rules behind its knobs, are in the docstring of ``data.py``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .dataset import ImageDataset

__all__ = ["SyntheticSpec", "SHAPE_NAMES", "COLOUR_NAMES", "make_synthetic", "shape_sdf", "polygon_sdf",
           "hsv_to_rgb"]


# --------------------------------------------------------------------------------------------
# Synthetic shapes: geometry (signed distances on a coordinate grid)
# --------------------------------------------------------------------------------------------
SHAPE_NAMES = ["circle", "square", "triangle", "star", "cross", "ring", "heart", "moon"]
COLOUR_NAMES = [
    "red", "orange", "yellow", "lime", "green", "mint",
    "cyan", "azure", "blue", "violet", "magenta", "pink",
]  # hue classes k * 30 degrees (HSV hue), k = 0..11


def _regular_polygon(k: int, radius: float, phase: float) -> torch.Tensor:
    """``(k, 2)`` vertices of a regular k-gon on the circle of ``radius``."""
    t = phase + 2 * math.pi * torch.arange(k) / k
    return radius * torch.stack([t.cos(), t.sin()], 1)


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.45) -> torch.Tensor:
    """``(2*points, 2)`` vertices of a star, alternating outer and inner radius, tip up."""
    t = -math.pi / 2 + math.pi * torch.arange(2 * points) / points
    r = torch.tensor([outer, inner]).repeat(points)
    return torch.stack([r * t.cos(), r * t.sin()], 1)


def _cross(half: float = 0.9, arm: float = 0.3) -> torch.Tensor:
    """``(12, 2)`` vertices of a plus sign with arms of half-width ``arm``."""
    a, h = arm, half
    return torch.tensor([[a, -h], [a, -a], [h, -a], [h, a], [a, a], [a, h],
                         [-a, h], [-a, a], [-h, a], [-h, -a], [-a, -a], [-a, -h]])


def _heart(n: int = 40) -> torch.Tensor:
    """``(n, 2)`` vertices on the classic parametric heart, tip down, fitted in the unit disc."""
    t = 2 * math.pi * torch.arange(n) / n
    x = 16 * t.sin() ** 3
    y = -(13 * t.cos() - 5 * (2 * t).cos() - 2 * (3 * t).cos() - (4 * t).cos())  # y points down
    v = torch.stack([x, y], 1)
    v = v - (v.max(0).values + v.min(0).values) / 2
    return v / v.norm(dim=1).max() * 0.95


_POLYGONS = {
    "square": _regular_polygon(4, 0.95, math.pi / 4),
    "triangle": _regular_polygon(3, 1.0, -math.pi / 2),
    "star": _star(),
    "cross": _cross(),
    "heart": _heart(),
}


def polygon_sdf(p: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Signed distance from points to a closed polygon (negative inside).

    Distance to the nearest edge, with the sign from the even-odd (crossing number) rule:
    ``p`` ``(..., 2) float`` points and ``vertices`` ``(V, 2) float`` polygon corners, in order,
    give ``(...) float`` signed distances.
    """
    px, py = p[..., 0], p[..., 1]
    d2 = (px - vertices[0, 0]) ** 2 + (py - vertices[0, 1]) ** 2
    inside = torch.zeros_like(px, dtype=torch.bool)
    for (ax, ay), (bx, by) in zip(vertices.tolist(), vertices.roll(1, 0).tolist()):
        ex, ey = bx - ax, by - ay
        wx, wy = px - ax, py - ay
        h = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0, 1)  # nearest point on the edge
        d2 = torch.minimum(d2, (wx - h * ex) ** 2 + (wy - h * ey) ** 2)
        if ey != 0:  # does the horizontal ray from p to +x cross edge (a, b)?
            crosses = (py >= ay) != (py >= by)
            inside ^= crosses & (px < ax + wy * (ex / ey))
    return torch.where(inside, -1.0, 1.0) * d2.sqrt()


def shape_sdf(name: str, p: torch.Tensor) -> torch.Tensor:
    """Signed distance ``(...)`` to the unit-size shape ``name`` at points ``p`` ``(..., 2)``.

    Shapes are centred at 0 and fit in the unit disc, so (after dividing the coordinates by the
    object's radius) every shape covers a similar extent.
    """
    r = p.norm(dim=-1)
    if name == "circle":
        return r - 0.85
    if name == "ring":
        return (r - 0.7).abs() - 0.24
    if name == "moon":  # a disc minus a shifted disc
        bite = (p - torch.tensor([0.42, -0.25], device=p.device)).norm(dim=-1) - 0.68
        return torch.maximum(r - 0.9, -bite)
    return polygon_sdf(p, _POLYGONS[name].to(p.device))


# --------------------------------------------------------------------------------------------
# Synthetic shapes: colour and texture
# --------------------------------------------------------------------------------------------
def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV to RGB. ``h`` in turns ([0, 1) = 0-360 degrees), ``s``, ``v`` in [0, 1]; ``(...)`` each.

    Returns ``(..., 3) float`` in [0, 1]. Uses f(n) = v - v s max(0, min(k, 4 - k, 1)),
    k = (n + 6 h) mod 6, for n = 5, 3, 1 (R, G, B).
    """
    n = torch.tensor([5.0, 3.0, 1.0], device=h.device)
    k = (n + 6 * h[..., None]) % 6
    return v[..., None] - v[..., None] * s[..., None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


@dataclass(frozen=True)
class SyntheticSpec:
    """The knobs of the synthetic generator (defaults: the shipped dataset).

    Ranges are (low, high) of uniform draws. Hues are in degrees, position and scale in fractions
    of the image side, rotation in degrees.
    """

    n_shapes: int = 8               # first n of SHAPE_NAMES
    n_hues: int = 12                # hue classes, 360 / n_hues degrees apart
    hue_jitter: float = 6.0         # +- degrees around the class hue
    obj_sat: tuple = (0.45, 0.9)
    obj_val: tuple = (0.6, 1.0)
    scale: tuple = (0.2, 0.32)      # object radius / image side
    position: tuple = (0.32, 0.68)  # object centre x, y / image side
    rotation: tuple = (-30.0, 30.0)  # degrees; within +-36 no shape but circle/ring repeats itself
    outline: float = 0.5            # dark outline width in pixels (0: none)
    bg_sat: tuple = (0.0, 0.1)      # near-grey: a coloured background is a per-image shortcut
    bg_val: tuple = (0.3, 0.95)
    bg_blobs: int = 3               # smoothness of the two-colour background blend (grid cells)
    texture: float = 0.03           # std of the fine per-pixel noise texture
    version: int = 2                # bump when the generator changes (invalidates caches)

    def __post_init__(self) -> None:
        if not 1 <= self.n_shapes <= len(SHAPE_NAMES):
            raise ValueError(f"n_shapes must be in 1..{len(SHAPE_NAMES)}, got {self.n_shapes}")
        if self.n_hues < 1:
            raise ValueError(f"n_hues must be >= 1, got {self.n_hues}")
        if self.n_hues > 1 and not 0 <= self.hue_jitter < 180 / self.n_hues:
            raise ValueError(f"hue_jitter must be in [0, {180 / self.n_hues:g}) degrees (half the gap "
                             f"between hue classes) so the image fixes the colour; got {self.hue_jitter}")
        for name in ("obj_sat", "obj_val", "scale", "position", "rotation", "bg_sat", "bg_val"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be a (low, high) range with low <= high, got {(lo, hi)}")


def _background(n: int, size: int, spec: SyntheticSpec, g: torch.Generator) -> torch.Tensor:
    """``(n, 3, size, size) float`` textured backgrounds.

    Two random colours blended by smooth noise, plus fine noise. Background hues cover the whole
    circle, like the objects'.
    """
    cols = [hsv_to_rgb(torch.rand(n, generator=g), _uniform(n, *spec.bg_sat, g), _uniform(n, *spec.bg_val, g))
            for _ in range(2)]
    blend = torch.randn(n, 1, spec.bg_blobs, spec.bg_blobs, generator=g)
    blend = torch.sigmoid(3 * F.interpolate(blend, size=(size, size), mode="bicubic", align_corners=False))
    bg = cols[0][:, :, None, None] * blend + cols[1][:, :, None, None] * (1 - blend)
    return bg + spec.texture * torch.randn(n, 3, size, size, generator=g)


def _object_coverage(shape: torch.Tensor, cx, cy, radius, angle, size: int, outline: float):
    """Anti-aliased coverage of each object: ``fill`` and ``edge`` masks ``(n, size, size)`` in [0, 1].

    A pixel centre p maps to shape coordinates q = R(-angle) (p - centre) / radius; the signed
    distance d (in pixels) = sdf(q) * radius gives coverage clamp(0.5 - d, 0, 1).
    """
    n = shape.shape[0]
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    px = coords[None, None, :] - cx[:, None, None]  # (n, 1, size)
    py = coords[None, :, None] - cy[:, None, None]  # (n, size, 1)
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    q = torch.stack([cos * px + sin * py, -sin * px + cos * py], -1) / radius[:, None, None, None]
    # Shapes lie inside the unit disc: only pixels near that disc need the exact distance.
    near = q.norm(dim=-1) < 1 + 2 / radius[:, None, None]
    img, pts = near.nonzero()[:, 0], q[near]  # (M,) image of each near pixel, (M, 2) its q
    d_near = torch.empty(len(pts))
    for k in shape.unique().tolist():
        sel = shape[img] == k
        d_near[sel] = shape_sdf(SHAPE_NAMES[k], pts[sel]) * radius[img[sel]]
    d = torch.full((n, size, size), 2.0 + outline)  # far pixels: outside, with a margin
    d[near] = d_near
    fill = (0.5 - d).clamp(0, 1)
    edge = (0.5 + outline - d).clamp(0, 1) if outline > 0 else fill
    return fill, edge


_CHUNK = 1024  # images rendered at once: keeps every temporary small (large CPU tensors are slow)


@contextmanager
def _one_thread():
    """Run torch single-threaded inside the block.

    Rendering is hundreds of small element-wise ops: a second thread gains ~20 %, but on a busy
    machine (other processes on the cores) the threads' barriers stall and a 2-thread build was
    measured 50x slower.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def make_synthetic(
    n: int, size: int = 32, seed: int = 0, spec: SyntheticSpec = SyntheticSpec()
) -> ImageDataset:
    """Generate ``n`` images of one coloured shape on a textured background (no cache).

    Shape and hue classes are balanced (each appears n / n_classes times, rounded, in a random
    order). ``size`` is the image side in pixels; all randomness comes from
    ``torch.Generator().manual_seed(seed)``; ``spec`` holds the generator's knobs.

    Returns an ``ImageDataset``, target "shape", with images ``(n, 3, size, size) uint8`` and
    labels ``shape``, ``colour`` ``(n,) int64``; ``x``, ``y`` (object centre / image side,
    0 = left, top), ``scale`` (radius / image side), ``rotation`` (degrees, clockwise on screen),
    ``hue`` (degrees), ``saturation``, ``value`` (HSV of the object), ``(n,) float32``.
    """
    g = torch.Generator().manual_seed(seed)
    f = _sample_factors(n, spec, g)
    with _one_thread():
        chunks = [_render({k: v[i:i + _CHUNK] for k, v in f.items()}, size, spec, g)
                  for i in range(0, n, _CHUNK)]
    images = torch.cat(chunks) if chunks else torch.empty(0, 3, size, size, dtype=torch.uint8)
    classes = {"shape": SHAPE_NAMES[: spec.n_shapes], "colour": _colour_names(spec.n_hues)}
    return ImageDataset(images, f, classes, target="shape")


def _sample_factors(n: int, spec: SyntheticSpec, g: torch.Generator) -> dict[str, torch.Tensor]:
    """The label columns of ``n`` images: balanced classes, uniform continuous factors."""
    shape = (torch.arange(n) % spec.n_shapes)[torch.randperm(n, generator=g)]
    colour = (torch.arange(n) % spec.n_hues)[torch.randperm(n, generator=g)]
    hue = (colour * 360.0 / spec.n_hues + _uniform(n, -spec.hue_jitter, spec.hue_jitter, g)) % 360
    return {
        "shape": shape, "colour": colour,
        "x": _uniform(n, *spec.position, g), "y": _uniform(n, *spec.position, g),
        "scale": _uniform(n, *spec.scale, g), "rotation": _uniform(n, *spec.rotation, g),
        "hue": hue, "saturation": _uniform(n, *spec.obj_sat, g), "value": _uniform(n, *spec.obj_val, g),
    }


def _render(f: dict[str, torch.Tensor], size: int, spec: SyntheticSpec, g: torch.Generator) -> torch.Tensor:
    """``(n, 3, size, size) uint8`` images for the factors ``f`` (a chunk of the label columns)."""
    n = len(f["shape"])
    bg = _background(n, size, spec, g)
    fill, edge = _object_coverage(f["shape"], f["x"] * size, f["y"] * size, f["scale"] * size,
                                  torch.deg2rad(f["rotation"]), size, spec.outline)
    rgb = hsv_to_rgb(f["hue"] / 360, f["saturation"], f["value"])
    img = bg * (1 - edge[:, None]) + 0.08 * (edge - fill)[:, None]  # background, dark outline
    img = img + rgb[:, :, None, None] * fill[:, None]  # flat-coloured object, anti-aliased edge
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def _colour_names(n_hues: int) -> list[str]:
    if n_hues == len(COLOUR_NAMES):
        return list(COLOUR_NAMES)
    return [f"hue{round(k * 360 / n_hues)}" for k in range(n_hues)]
