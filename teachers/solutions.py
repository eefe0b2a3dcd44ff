"""The teachers' solutions to the code exercises of the course, written from scratch in plain PyTorch.

Not part of the package students import (``equimod_edu``): keep this folder out of what you hand
out. Each function passes its check in ``equimod_edu.loss_exercises`` or
``equimod_edu.displacement_exercise``; tests/test_loss_exercises.py and tests/test_displacement_exercise.py run
them. ``equimod_edu/losses.py`` holds the library's versions (with negatives gathered across GPUs).

    import sys; sys.path.insert(0, "teachers")
    import solutions
    from equimod_edu.loss_exercises import check_nt_xent
    check_nt_xent(solutions.nt_xent)
"""

import torch
import torch.nn.functional as F


def nt_xent(z_1: torch.Tensor, z_2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent: each of the 2N vectors must find its partner among the 2N - 1 others."""
    n = z_1.shape[0]
    z = F.normalize(torch.cat([z_1, z_2]).float(), dim=1)          # (2N, D), unit vectors
    logits = z @ z.T / temperature                                  # (2N, 2N) cosines / T
    logits.fill_diagonal_(float("-inf"))                            # a vector is not its own negative
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # i <-> i + N
    return F.cross_entropy(logits, partner)                         # mean of -log softmax[partner]


def equivariance_gain(y: torch.Tensor, y_hat: torch.Tensor, y_o: torch.Tensor) -> torch.Tensor:
    """Per sample: how much closer the prediction is to the view than the original is."""
    return F.cosine_similarity(y.float(), y_hat.float(), dim=1) - F.cosine_similarity(y.float(), y_o.float(), dim=1)


def equivariance_loss(y_1: torch.Tensor, y_2: torch.Tensor, y_hat_1: torch.Tensor, y_hat_2: torch.Tensor,
                                temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE over [y_1; y_2; y_hat_1; y_hat_2]: y_k^i and its prediction y_hat_k^i are partners."""
    n2 = 2 * y_1.shape[0]
    v = F.normalize(torch.cat([y_1, y_2, y_hat_1, y_hat_2]).float(), dim=1)   # (4N, D)
    logits = v @ v.T / temperature
    logits.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n2, 2 * n2), torch.arange(0, n2)]).to(v.device)
    return F.cross_entropy(logits, partner)


def displacement_map(model) -> torch.Tensor:
    """M (y_dim, param_dim) of EquiMod's linear module in eval mode: y_hat(y_o, t) - y_hat(y_o, t') = M (t - t').

    p(t) = BN_p(W_p t) and y_hat = BN_u(W_u [y_o ; p(t)]). A BatchNorm with running statistics is
    x -> s * x + b with s = weight / sqrt(running_var + eps) (weight 1 without affine). So
    y_hat = s_u * (W_y y_o + W_t (s_p * (W_p t) + b_p)) + b_u, where W_u = [W_y | W_t]: the part in t
    is M t with M = diag(s_u) W_t diag(s_p) W_p, and no product of y_o and t appears. The shifts b
    cancel in a difference of two predictions, which is therefore the same for every image. Only the
    weights are read: the check refuses running any part of the model.
    """
    linear_p, norm_p = model.param_encoder.layers[0], model.param_encoder.layers[1]
    linear_u, norm_u = model.predictor.layers[0], model.predictor.layers[1]

    def scale(norm):
        weight = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
        return weight / torch.sqrt(norm.running_var + norm.eps)

    w_t = linear_u.weight[:, model.cfg.y_dim:]                     # (y_dim, embed_dim): the columns reading p(t)
    m = scale(norm_u)[:, None] * (w_t @ (scale(norm_p)[:, None] * linear_p.weight))
    if model.param_mask is not None:                               # masked columns of t are zeroed before p
        m = m * model.param_mask.to(m)[None, :]
    return m
