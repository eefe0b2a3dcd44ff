"""Equivariance: how well a predictor u(y_o, t) anticipates where an augmentation moves the embedding.

    scorer(model)                                   # (embed, predict): the model's own module, in y
    equivariance_metrics(model, test.images[:256], aug)          # gain, retrieval, per augmentation
    predictor_sensitivity(model, test.images[:256], aug)         # which groups of t u uses
    column_weights(model, aug.column_names())                    # how far each column of t moves y_hat
    posthoc = fit_posthoc_predictor(simclr, train.images[:4096], aug)   # a module for a baseline
    equivariance_metrics(simclr, test.images[:256], aug, posthoc)       # the same question of it
    invariance_distances(model, test.images[:64], aug)           # 1 - cos(view, original) per strength

Sections: 1. embeddings of views (``ViewEmbeddings``, ``embed_views``, ``embed_augmented``) and the
``scorer`` that names the space and the predictor (a ``Panel`` holds the three); 2. prediction quality
(the gain cos(y, y_hat) - cos(y, y_o) of docs/design.md, a relative gain) and retrieval (does the
prediction find the true view among many?), with chance levels; 3. sensitivity (permutation
importance per group of t, and the linear module's displacement map M, the same for every image);
4. the post-hoc predictor, fitted on a frozen model so that models with and without the module
answer the same question; 5. invariance distances per augmentation and strength.

Hit rates and MRR are fractions in [0, 1]. Every function puts the model in eval mode; randomness
comes from explicit seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import AugmentationConfig, AugmentationParams, apply
from .dataset import Images, as_images
from .losses import equivariance_gain, equivariance_loss
from .models import EquiModModel, EquivariantPredictor, ParameterEncoder, batched, cosine, model_device
from .recipes import one_at_a_time_groups, sample_one_augmentation, sample_views, sweep_params

#: A predictor: (y_o (N, D), t (N, P)) -> y_hat (N, D). EquiMod's is ``model.predict``.
Predictor = Callable[[Tensor, Tensor], Tensor]


# ============================================================================================
# 1. Embeddings of views, and what to score
# ============================================================================================
@dataclass
class ViewEmbeddings:
    """Embeddings of B images and K augmented views of each (the rows of the equivariance metrics).

    y_o:   (B, D) embedding of each original;
    y:     (B*K, D) embedding of each view, row i*K + k = view k of image i;
    t:     (B*K, P) encoded parameters of each view (the predictor's input);
    image: (B*K,) long, the image of each row (i).
    """

    y_o: Tensor
    y: Tensor
    t: Tensor
    image: Tensor

    @property
    def y_o_rows(self) -> Tensor:
        """(B*K, D): the original's embedding repeated for each of its views."""
        return self.y_o[self.image]

@torch.no_grad()
def embed_views(images: Tensor, aug: AugmentationConfig, params: AugmentationParams, views: int,
                embed: Callable[[Tensor], Tensor], batch_size: int = 512,
                y_o: Optional[Tensor] = None) -> ViewEmbeddings:
    """Embed B originals and their B*K views (params row i*K + k is view k of image i).

    images (B, 3, H, W) uint8; embed: normalised images (n, 3, S, S) -> (n, D), e.g.
    ``model.embedder("y")``; y_o (B, D): the originals' embeddings if already computed.
    t is ``aug.encode(params)``: the encoding the model was trained with. Returns a
    ``ViewEmbeddings`` on the device of params.
    """
    device = params.device
    images = images.to(device)
    if y_o is None:
        y_o = batched(lambda x: embed(aug.original(x)).float(), images, batch_size, device)
    image = torch.arange(len(images), device=device).repeat_interleave(views)
    y = embed_augmented(images, image, params, aug, embed, batch_size)
    return ViewEmbeddings(y_o=y_o, y=y, t=aug.encode(params), image=image)

@torch.no_grad()
def embed_augmented(images: Tensor, image: Tensor, params: AugmentationParams, aug: AugmentationConfig,
                    embed: Callable[[Tensor], Tensor], batch_size: int = 256) -> Tensor:
    """(R, D) embeddings of R views: row r is images[image[r]] augmented with params[r]."""
    rows = torch.arange(len(image), device=image.device)
    return torch.cat([embed(apply(images[image[r]], params[r], aug)).float() for r in rows.split(batch_size)])

def scorer(model: EquiModModel, predictor: Optional[Predictor] = None, space: str = "y"
           ) -> tuple[Callable[[Tensor], Tensor], Predictor]:
    """(embed, predict): the embedding a metric lives in and the predictor it scores.

    embed: normalised images (n, 3, S, S) -> (n, D); predict: (y_o (n, D), t (n, P)) -> (n, D).
    A PosthocPredictor brings its own (standardised) space; otherwise `space` ("y", "z", "h") of
    the model, and the model's own module when predictor is None.
    """
    if isinstance(predictor, PosthocPredictor):
        return (lambda x: predictor.embed(model, x)), predictor.eval()
    if predictor is None:
        if not model.cfg.equimod:
            raise ValueError("this model has no equivariance module (a SimCLR / BYOL baseline): fit one with "
                             "fit_posthoc_predictor(model, images, aug) and pass predictor=...")
        predictor = model.predict
    return model.embedder(space), predictor


@dataclass(frozen=True)
class Panel:
    """A model and the question it is asked: which predictor, in which space (one explorer panel).

    predictor None: the model's own module (``model.predict``, in y); a ``PosthocPredictor``:
    its own standardised space; any other callable (y_o, t) -> y_hat: in `space` ("y", "z", "h").
    """

    model: EquiModModel
    predictor: Optional[Predictor] = None
    space: str = "y"

    def scorer(self) -> tuple[Callable[[Tensor], Tensor], Predictor]:
        """(embed, predict), as ``scorer`` gives them."""
        return scorer(self.model, self.predictor, self.space)

    @property
    def label(self) -> str:
        """The space in words: "y, the model's own module", "h standardised, post-hoc predictor"..."""
        if isinstance(self.predictor, PosthocPredictor):
            return f"{self.predictor.space} standardised, post-hoc predictor"
        if self.predictor is None:
            return "y, the model's own module"
        return f"{self.space}, given predictor"

# ============================================================================================
# 2. Prediction quality and retrieval
# ============================================================================================
def prediction_quality(y: Tensor, y_hat: Tensor, y_o: Tensor) -> dict[str, float]:
    """How well y_hat predicts y, against the invariant guess y_o. Three (N, D) -> floats.

    - cos_pred = mean cos(y, y_hat); cos_invariant = mean cos(y, y_o);
    - gain = mean [cos(y, y_hat) - cos(y, y_o)] (losses.equivariance_gain; docs/design.md: "the
      quantity learners should see"); 0 for the invariant predictor y_hat = y_o;
    - relative_gain = gain / mean [1 - cos(y, y_o)] = 1 - mean(1 - cos(y, y_hat)) / mean(1 - cos(y, y_o)):
      the fraction of the cosine distance between original and view that the prediction removes.
      0 for y_hat = y_o, 1 for a perfect prediction, < 0 when worse than invariance; NaN when the
      views do not move at all (a perfectly invariant embedding: nothing to predict).
    """
    cos_pred, cos_invariant = cosine(y, y_hat), cosine(y, y_o)
    gain = equivariance_gain(y, y_hat, y_o)
    moved = float((1 - cos_invariant).mean())
    return {"cos_pred": float(cos_pred.mean()), "cos_invariant": float(cos_invariant.mean()),
            "gain": float(gain.mean()), "relative_gain": float(gain.mean()) / moved if moved > 0 else float("nan")}

def chance_of_ranking(n_gallery: int, n_positive: int, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Expected MRR and Hit@k of a random ranking of n_gallery items, n_positive of them correct.

    The first r items are all wrong with probability P(rank > r) = C(G - m, r) / C(G, r) =
    prod_{i < r} (G - m - i) / (G - i); Hit@k = 1 - P(rank > k); MRR = sum_r P(rank = r) / r.
    With one correct item: Hit@1 = 1 / G and MRR = (1 + 1/2 + ... + 1/G) / G.
    """
    G, m = n_gallery, n_positive
    if not 1 <= m <= G:
        raise ValueError(f"need 1 <= n_positive <= n_gallery, got {m} and {G}")
    i = torch.arange(G - m + 1, dtype=torch.float64)
    survive = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod((G - m - i) / (G - i), 0)])
    p_rank = survive[:-1] - survive[1:]                                   # r = 1 .. G - m + 1
    out = {"mrr": float((p_rank / torch.arange(1, G - m + 2, dtype=torch.float64)).sum())}
    for k in ks:
        out[f"hit@{k}"] = float(1 - survive[min(k, G - m + 1)])
    return out

def _rank_summary(rank: Tensor, n_gallery: Tensor, n_positive: Tensor, ks: Sequence[int]) -> dict[str, float]:
    """MRR and Hit@k of ranks (Q,) and their chance levels, averaged over the queries."""
    out = {"mrr": float((1.0 / rank.double()).mean())}
    out.update({f"hit@{k}": float((rank <= k).double().mean()) for k in ks})
    pairs, counts = torch.unique(torch.stack([n_gallery, n_positive], 1), dim=0, return_counts=True)
    chance = {key: 0.0 for key in out}
    for (g, m), count in zip(pairs.tolist(), counts.tolist()):
        for key, value in chance_of_ranking(g, m, ks).items():
            chance[key] += value * count / len(rank)
    out.update({f"chance_{key}": value for key, value in chance.items()})
    out["gallery"] = float(n_gallery.double().mean())
    return out

@torch.no_grad()
def retrieval_metrics(queries: Tensor, gallery: Tensor, image: Tensor, keys: Optional[Tensor] = None,
                      ks: Sequence[int] = (1, 5), batch_size: int = 1024) -> dict[str, dict]:
    """Can each prediction find its own view? Query row q must retrieve gallery row q.

    queries (Q, D): predictions y_hat; gallery (Q, D): the true view embeddings y, row q being the
    target of query q; image (Q,) long: the image of each row; keys (Q, P): the parameters of each
    row (rows of the same image with equal keys are the same view and all count as correct).
    Items are ranked by cosine similarity; the rank is 1 + the number of wrong items at least as
    similar as the best correct one (ties count against the query: a collapsed embedding, where
    everything is equally similar, gets the worst rank, never a perfect one).

    Returns {"retrieval": gallery = all Q views (K views of each of B images; chance ~1/(BK)),
    "retrieval_within_image": gallery = the K views of the query's own image only (chance ~1/K:
    predicting y_o, invariance, cannot beat it)}, each {"mrr", "hit@k"..., "chance_mrr",
    "chance_hit@k"..., "gallery"}.
    """
    if keys is None:
        keys = torch.arange(len(image), device=image.device)[:, None]
    view_id = torch.unique(torch.cat([image[:, None].to(keys.dtype), keys], 1), dim=0, return_inverse=True)[1]
    q = F.normalize(queries.float(), dim=1)
    g = F.normalize(gallery.float().to(q.device), dim=1)
    view_id, image = view_id.to(q.device), image.to(q.device)
    rank_all, rank_within, n_positive, n_same = [], [], [], []
    for rows in torch.arange(len(q), device=q.device).split(batch_size):
        similarity = q[rows] @ g.T                                          # (b, Q)
        positive = view_id[rows, None] == view_id[None, :]
        same_image = image[rows, None] == image[None, :]
        best = similarity.masked_fill(~positive, float("-inf")).max(dim=1).values
        beaten = (similarity >= best[:, None]) & ~positive                  # wrong items ranked first
        rank_all.append(1 + beaten.sum(1))
        rank_within.append(1 + (beaten & same_image).sum(1))
        n_positive.append(positive.sum(1))
        n_same.append(same_image.sum(1))
    n_positive, n_same = torch.cat(n_positive).cpu(), torch.cat(n_same).cpu()
    everything = torch.full_like(n_positive, len(q))
    return {"retrieval": _rank_summary(torch.cat(rank_all).cpu(), everything, n_positive, ks),
            "retrieval_within_image": _rank_summary(torch.cat(rank_within).cpu(), n_same, n_positive, ks)}

@torch.no_grad()
def equivariance_scores(emb: ViewEmbeddings, predictor: Predictor, ks: Sequence[int] = (1, 5)) -> dict:
    """Gain, relative gain and retrieval of `predictor` on precomputed view embeddings.

    The predictor is called once, on all B*K rows: predictor(emb.y_o_rows, emb.t) -> (B*K, D).
    Returns ``prediction_quality``'s keys plus ``retrieval_metrics``'s two sections.
    """
    y_o = emb.y_o_rows
    y_hat = predictor(y_o, emb.t).float()
    return {**prediction_quality(emb.y, y_hat, y_o), **retrieval_metrics(y_hat, emb.y, emb.image, emb.t, ks)}

def equivariance_metrics(model: EquiModModel, images: Images, aug: AugmentationConfig,
                         predictor: Optional[Predictor] = None, gallery_size: int = 16, seed: int = 0,
                         space: str = "y", per_augmentation: bool = True, batch_size: int = 512) -> dict:
    """How well a predictor anticipates the embedding of fresh augmented views of held-out images.

    For B images, `gallery_size` = K views each, drawn from `aug` (the training distribution):
    y_o = embed(x_o), y = embed(view), y_hat = predictor(y_o, t). predictor defaults to the model's
    own module (``model.predict``); a ``PosthocPredictor`` (for SimCLR / BYOL) carries its own
    embedding space; any other callable (y_o, t) -> y_hat is scored in `space` ("y", "z", "h").

    Returns {"cos_pred", "cos_invariant", "gain", "relative_gain" (see prediction_quality),
    "retrieval", "retrieval_within_image" (see retrieval_metrics), "per_augmentation": {name: the
    same keys, with only that augmentation acting (sample_one_augmentation)}, "n_images", "views"}.
    """
    model.eval()
    embed, predict = scorer(model, predictor, space)
    device = model_device(model)
    images = as_images(images).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    n, size = len(images), tuple(images.shape[-2:])
    with torch.no_grad():
        y_o = batched(lambda x: embed(aug.original(x)).float(), images, batch_size, device)

    def scores(params: AugmentationParams) -> dict:
        emb = embed_views(images, aug, params, gallery_size, embed, batch_size, y_o)
        return equivariance_scores(emb, predict)

    report = scores(sample_views(aug, n, gallery_size, size, generator, device))
    if per_augmentation:
        report["per_augmentation"] = {
            group: scores(sample_one_augmentation(aug, group, n * gallery_size, size, generator, device))
            for group in one_at_a_time_groups(aug)}
    report.update(n_images=n, views=gallery_size)
    return report

# ============================================================================================
# 3. Predictor sensitivity
# ============================================================================================
@torch.no_grad()
def sensitivity_from_embeddings(emb: ViewEmbeddings, predictor: Predictor, groups: dict[str, slice],
                                repeats: int = 3, seed: int = 0) -> dict[str, float]:
    """Which parameters does the predictor use? Permutation importance per parameter group.

    drop[g] = mean cos(y, u(y_o, t)) - mean cos(y, u(y_o, t~)), where t~ is t with the columns
    of group g (groups: name -> slice of t, e.g. aug.encoded_groups()) permuted across the rows,
    averaged over `repeats` permutations. A group the predictor ignores gives exactly 0; a group
    it relies on gives a positive drop.
    """
    generator = torch.Generator().manual_seed(seed)
    y_o = emb.y_o_rows
    base = cosine(emb.y, predictor(y_o, emb.t)).mean()
    drops = {}
    for name, columns in groups.items():
        total = 0.0
        for _ in range(repeats):
            perm = torch.randperm(len(emb.t), generator=generator).to(emb.t.device)
            t = emb.t.clone()
            t[:, columns] = emb.t[perm][:, columns]
            total += float(base - cosine(emb.y, predictor(y_o, t)).mean())
        drops[name] = total / repeats
    return drops

@torch.no_grad()
def displacement_map(predict: Predictor, y_dim: int, param_dim: int, device=None) -> Tensor:
    """The matrix M (y_dim, param_dim) of an affine predictor: y_hat(y_o, t) - y_hat(y_o, t') = M (t - t').

    The paper's module is affine in eval mode: p(t) = BN(Linear(t)) and u = BN(Linear([y_o ; p]))
    with running statistics fold into y_hat = A y_o + M t + c. So the predicted displacement
    between two augmentations of the same image does not depend on the image, and column j of M is
    what one unit of column j of t moves y_hat by: M[:, j] = y_hat(0, e_j) - y_hat(0, 0). Put the
    model in eval mode first (``model.eval()``). Only meaningful for an affine predictor (depth 0);
    ``column_weights`` checks that.
    """
    eye = torch.eye(param_dim, device=device)
    origin = torch.zeros(param_dim + 1, y_dim, device=device)
    points = predict(origin, torch.cat([torch.zeros(1, param_dim, device=device), eye]))   # (P + 1, y_dim)
    return (points[1:] - points[:1]).T.float()


def translation_share(displacements: Tensor) -> float:
    """How much of per-image displacements one shared translation explains: 1 - E||d - d_mean||^2 / E||d||^2.

    displacements: (N, D), e.g. y(view) - y(original) of N images under the same augmentation. 1:
    every image moves by the same vector, which a linear module can predict (its predicted
    displacement is the same for every image, see ``displacement_map``); 0: the best shared
    translation is no better than predicting "nothing moved".
    """
    d = displacements.float()
    total = d.pow(2).sum(dim=1).mean()
    return float(1 - (d - d.mean(dim=0)).pow(2).sum(dim=1).mean() / total.clamp_min(1e-12))


@torch.no_grad()
def column_weights(model: EquiModModel, names: Sequence[str]) -> dict[str, float]:
    """How strongly each column of t moves EquiMod's prediction: the norms ||M[:, j]|| of ``displacement_map``.

    names: the columns of t (``aug.column_names()``), (P,). A column whose weight is near 0 is an
    augmentation the module predicts as "nothing moved". Raises ValueError for a non-linear
    predictor (depth > 0), whose displacement depends on the image.
    """
    if model.predictor is None:
        raise ValueError("column_weights needs the equivariance module: cfg.equimod is False")
    if model.cfg.predictor_depth != 0:
        raise ValueError(f"column_weights needs the paper's linear predictor (depth 0), got depth "
                         f"{model.cfg.predictor_depth}: an MLP's displacement depends on the image")
    if len(names) != model.cfg.param_dim:
        raise ValueError(f"names must name the {model.cfg.param_dim} columns of t, got {len(names)}")
    model.eval()
    m = displacement_map(model.predict, model.cfg.y_dim, model.cfg.param_dim, model_device(model))
    return {name: float(norm) for name, norm in zip(names, m.norm(dim=0).tolist())}


def predictor_sensitivity(model: EquiModModel, images: Images, aug: AugmentationConfig,
                          predictor: Optional[Predictor] = None, views: int = 2, seed: int = 0,
                          space: str = "y", repeats: int = 3, batch_size: int = 512) -> dict[str, float]:
    """Drop of mean cos(y, y_hat) when one parameter group of t is permuted across the batch.

    `views` views per image from `aug`; one entry per group of aug.encoded_groups() (crop, flip,
    jitter, order, brightness, contrast, saturation, hue, grayscale[, blur, solarize]). predictor
    and space as in ``equivariance_metrics``. Groups hidden from the model's predictor by its
    param_mask give exactly 0.
    """
    model.eval()
    embed, predict = scorer(model, predictor, space)
    device = model_device(model)
    images = as_images(images).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    params = sample_views(aug, len(images), views, tuple(images.shape[-2:]), generator, device)
    emb = embed_views(images, aug, params, views, embed, batch_size)
    return sensitivity_from_embeddings(emb, predict, aug.encoded_groups(), repeats, seed)

# ============================================================================================
# 4. A post-hoc predictor for models without the module
# ============================================================================================
class PosthocPredictor(nn.Module):
    """An equivariant predictor fitted *after* training, on a frozen model.

    Same shape as EquiMod's module: p(t) = BN(Linear(t)) and u([y_o ; p(t)]) = Linear + BN without
    affine (``depth`` > 0: an MLP). It lives in a *standardised* embedding space of the frozen
    model, y = (e - mean) / std with e = h (default), z or y, mean and std (D,) measured on the
    originals used to fit. Standardising plays the role of the BatchNorm without affine that ends
    EquiMod's g': cosines are taken around the data's centre, not around 0 (h comes after a ReLU,
    so every cos(h_a, h_b) would be high whatever the augmentation).

    Call it as any predictor: ``predictor(y_o, t) -> y_hat``, (N, D), (N, P) -> (N, D); embed with
    ``predictor.embed(model, x)``. ``history``: mean training loss per epoch.
    """

    def __init__(self, space: str, dim: int, param_dim: int, embed_dim: int = 128, depth: int = 0,
                 hidden_dim: int = 512):
        super().__init__()
        self.space = space
        self.param_encoder = ParameterEncoder(param_dim, embed_dim)
        self.predictor = EquivariantPredictor(dim, embed_dim, depth, hidden_dim)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.history: list[float] = []

    def embed(self, model: EquiModModel, x: Tensor) -> Tensor:
        """Standardised embedding (N, D) of normalised images x (N, 3, S, S) in the model's space."""
        return (model.embedder(self.space)(x).float() - self.mean) / self.std

    def forward(self, y_o: Tensor, t: Tensor) -> Tensor:
        return self.predictor(torch.cat([y_o, self.param_encoder(t.float())], dim=1))

def fit_posthoc_predictor(model: EquiModModel, images: Images, aug: AugmentationConfig, epochs: int = 30,
                          space: str = "h", pairs: int = 2, embed_dim: int = 128, depth: int = 0,
                          hidden_dim: int = 512, batch_size: int = 256, lr: float = 1e-3,
                          temperature: float = 0.2, seed: int = 0, embed_batch_size: int = 512) -> PosthocPredictor:
    """Fit a ``PosthocPredictor`` on a frozen model with EquiMod's equivariance loss.

    The model never changes. For each image, `pairs` pairs of views (t_1 from the config's view 1,
    t_2 from view 2) are embedded once and cached; the predictor is then trained for `epochs`
    passes over them with Adam (lr) on losses.equivariance_loss (InfoNCE over [y_1; y_2; y_hat_1;
    y_hat_2], temperature 0.2 as in the paper), batches of `batch_size` (the last partial batch is
    dropped). Space "h" by default: see report.evaluate_run for why (the representation
    itself, the same question for every model). Returns the predictor in eval mode.
    """
    model.eval()
    device = model_device(model)
    images = as_images(images).to(device)
    raw = model.embedder(space)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        e_o = batched(lambda x: raw(aug.original(x)).float(), images, embed_batch_size, device)
    with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the global RNG alone
        torch.manual_seed(seed)
        predictor = PosthocPredictor(space, e_o.shape[1], aug.encoded_dim, embed_dim, depth, hidden_dim).to(device)
    predictor.mean.copy_(e_o.mean(dim=0))
    predictor.std.copy_(e_o.std(dim=0).clamp_min(1e-6))

    def embed(x: Tensor) -> Tensor:
        return predictor.embed(model, x)

    every = torch.arange(len(images), device=device)
    cached = {"y_1": [], "y_2": [], "t_1": [], "t_2": []}
    for _ in range(pairs):
        for k, params in enumerate(aug.sample_pair(len(images), tuple(images.shape[-2:]), generator, device), 1):
            cached[f"y_{k}"].append(embed_augmented(images, every, params, aug, embed, embed_batch_size))
            cached[f"t_{k}"].append(aug.encode(params))
    data = {name: torch.cat(values) for name, values in cached.items()}
    data["y_o"] = ((e_o - predictor.mean) / predictor.std).repeat(pairs, 1)
    _train_predictor(predictor, data, epochs, batch_size, lr, temperature, generator)
    return predictor.eval()

def _train_predictor(predictor: PosthocPredictor, data: dict[str, Tensor], epochs: int, batch_size: int,
                     lr: float, temperature: float, generator: torch.Generator) -> None:
    """Adam on the equivariance InfoNCE over cached (y_o, y_1, y_2, t_1, t_2), each (M, .)."""
    optimizer = torch.optim.Adam(predictor.parameters(), lr=lr)
    m = len(data["y_o"])
    batch_size = min(batch_size, m)
    predictor.train()
    for _ in range(epochs):
        order = torch.randperm(m, generator=generator, device=generator.device).to(data["y_o"].device)
        losses = []
        for index in order[: m // batch_size * batch_size].view(-1, batch_size):
            d = {name: value[index] for name, value in data.items()}
            y_hat_1, y_hat_2 = predictor(d["y_o"], d["t_1"]), predictor(d["y_o"], d["t_2"])
            loss = equivariance_loss(d["y_1"], d["y_2"], y_hat_1, y_hat_2, temperature, gather=False)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        predictor.history.append(sum(losses) / len(losses))

# ============================================================================================
# 5. Invariance: how far does each augmentation move the embedding?
# ============================================================================================
def _spaces(model, spaces: Optional[Sequence[str]]) -> tuple[str, ...]:
    return tuple(spaces) if spaces is not None else ("h", "y") if model.cfg.equimod else ("h", "z")

@torch.no_grad()
def invariance_distances(model, images, aug: AugmentationConfig, groups: Optional[Sequence[str]] = None,
                         steps: int = 9, spaces: Optional[Sequence[str]] = None, centre: bool = True,
                         batch_size: int = 256) -> dict:
    """Mean embedding distance 1 - cos(e(view), e(x_o)) over images, per augmentation and strength.

    images: (N, 3, H, W) uint8; groups: augmentations (default: the ones the config uses,
    recipes.one_at_a_time_groups); spaces: default ("h", "y") with the module, else ("h", "z").
    centre: measure cosines around the mean embedding of the originals (as the post-hoc predictor
    does: h follows a ReLU, so raw cosines between any two h are high); needs N >= 2.
    Returns {"fraction": {group: (S,)}, "values": {group: (S,)}, "distance": {space: {group: (S,)}}}.
    """
    model.eval()
    images = as_images(images)
    if centre and len(images) < 2:
        raise ValueError("centre=True needs at least 2 images (their mean is the centre); or pass centre=False")
    device = model_device(model)
    spaces, groups = _spaces(model, spaces), list(groups or one_at_a_time_groups(aug))
    embeds = {space: model.embedder(space) for space in spaces}
    images = images.to(device)
    originals = {space: batched(lambda x: embed(x).float(), aug.original(images), batch_size)
                 for space, embed in embeds.items()}
    centres = {space: e.mean(dim=0) if centre else torch.zeros_like(e[0]) for space, e in originals.items()}
    out = {"fraction": {}, "values": {}, "distance": {space: {} for space in spaces}}
    for group in groups:
        sweep = sweep_params(aug, group, steps, tuple(images.shape[-2:]))
        s = len(sweep.values)
        rows = torch.arange(len(images), device=device).repeat_interleave(s)          # row i*S + k
        params = sweep.params[torch.arange(s).repeat(len(images))].to(device)
        out["fraction"][group], out["values"][group] = sweep.fraction, sweep.values
        for space, embed in embeds.items():
            e = embed_augmented(images, rows, params, aug, embed, batch_size)
            c = centres[space]
            cos = F.cosine_similarity(e - c, originals[space][rows] - c)
            out["distance"][space][group] = (1 - cos).view(len(images), s).mean(dim=0).cpu().numpy()
    return out
