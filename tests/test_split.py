"""split.py: the hypernetwork's matrices, the loss against a float64 reference, the head it adds, a resume.

The split objective is SimCLR whose z is cut in two: z_inv trained invariant (NT-Xent), z_eq of each
view predicted from the other view's by W(d) z_eq, W(d) a k x k matrix made by a hypernetwork of the
views' standardised relative parameters d (augself.augself_targets / augself_scale).
"""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import params_of

from equimod_edu import cli
from equimod_edu.augself import augself_scale, augself_targets
from equimod_edu.checkpoint import load_checkpoint
from equimod_edu.compare import variant_config
from equimod_edu.config import AUGSELF_GROUPS, TrainConfig
from equimod_edu.run_folder import changed_settings
from equimod_edu.split import Hypernetwork, SplitSpace
from equimod_edu.train import OBJECTIVES, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

SPLIT = dict(objective="split", equimod=False, split_dim=8, split_hidden=12)  # tiny z_dim 16: z_inv 8, z_eq 8


def _objective_and_batch(tmp_path, tiny_config, tiny_dataset, **overrides):
    trainer = Trainer(tiny_config(tmp_path, **{**SPLIT, **overrides}), dataset=tiny_dataset())
    return trainer, trainer.objective, trainer.next_batch(0)


def test_the_hypernetwork_makes_one_k_by_k_matrix_per_image_and_a_fixed_one_for_d_zero():
    torch.manual_seed(0)
    hypernetwork = Hypernetwork(n_params=8, dim=5, hidden=16)
    d = torch.cat([torch.randn(3, 8), torch.zeros(2, 8)])
    matrices = hypernetwork.matrices(d)
    assert matrices.shape == (5, 5, 5)
    assert torch.equal(matrices[3], matrices[4])  # d = 0 (the same augmentation twice): one fixed matrix W(0)
    assert not torch.allclose(matrices[0], matrices[1]) and not torch.allclose(matrices[0], matrices[3])
    z = torch.randn(5, 5)
    by_hand = torch.stack([matrices[i] @ z[i] for i in range(5)])  # row i: W(d_i) z_i
    assert torch.allclose(hypernetwork(z, d), by_hand, atol=1e-6)
    assert hypernetwork(z[:1], d[:1]).shape == (1, 5)  # one image is still (1, k)


def test_the_loss_is_nt_xent_on_z_inv_plus_the_weighted_infonce_of_the_predictions_against_float64(
        tmp_path, tiny_config, tiny_dataset):
    trainer, objective, batch = _objective_and_batch(tmp_path, tiny_config, tiny_dataset, split_weight=0.5,
                                                     temperature_inv=0.4, temperature_equi=0.3)
    model64, hypernetwork64 = copy.deepcopy(trainer.model).double(), copy.deepcopy(objective.hypernetwork).double()
    losses = objective.losses(objective(trainer.model, batch), batch)
    # by hand, in float64: z of both views, cut into z_inv (8) and z_eq (8); d and W(d); the two InfoNCEs
    n = batch.x_1.shape[0]
    z = model64.projector(model64.features(torch.cat([batch.x_1, batch.x_2]).double()))
    z_inv, z_eq = z[:, :8], z[:, 8:]
    d = augself_targets(batch.params_1, batch.params_2, trainer.aug).double() / augself_scale(trainer.aug).double()
    w = hypernetwork64.layers(torch.cat([d, -d])).view(2 * n, 8, 8)  # W(d_12) for view 1, W(d_21) for view 2
    z_hat_2, z_hat_1 = torch.einsum("nij,nj->ni", w, z_eq).split(n)

    def info_nce(vectors, partner, temperature):
        q = F.normalize(vectors, dim=1)
        logits = (q @ q.T / temperature).masked_fill(torch.eye(len(q), dtype=torch.bool), float("-inf"))
        return F.cross_entropy(logits, partner), (logits.argmax(1) == partner).double().mean()

    index = torch.arange(n)
    inv, _ = info_nce(z_inv, torch.cat([index + n, index]), 0.4)
    index = torch.arange(2 * n)
    equi, top1 = info_nce(torch.cat([z_eq, z_hat_1, z_hat_2]), torch.cat([index + 2 * n, index]), 0.3)
    assert torch.allclose(losses["inv"].double(), inv, rtol=1e-5)
    assert torch.allclose(losses["split_equi"].double(), equi, rtol=1e-5)
    assert torch.allclose(losses["loss"], losses["inv"] + 0.5 * losses["split_equi"])
    assert losses["split_top1"] == top1.float() and losses["equi"] == 0
    assert torch.isclose(losses["split_chance"], torch.tensor(math.log(4 * n - 1)))
    gain = torch.cat([F.cosine_similarity(z_eq[n:], z_hat_2) - F.cosine_similarity(z_eq[n:], z_eq[:n]),
                      F.cosine_similarity(z_eq[:n], z_hat_1) - F.cosine_similarity(z_eq[:n], z_eq[n:])]).mean()
    assert torch.allclose(losses["split_gain"].double(), gain, atol=1e-5)
    assert set(objective.checked) == {"loss", "inv", "split_equi"} and objective.label == "simclr+split"


def test_the_switch_adds_a_trained_hypernetwork_and_leaves_the_model_alone(tmp_path, tiny_config, tiny_dataset):
    data = tiny_dataset()
    plain = Trainer(tiny_config(tmp_path / "a", equimod=False), dataset=data)
    trainer = Trainer(tiny_config(tmp_path / "b", **SPLIT), dataset=data)
    objective = trainer.objective
    assert OBJECTIVES["split"] is SplitSpace and type(objective) is SplitSpace
    layers = objective.hypernetwork.layers
    assert [tuple(layer.weight.shape) for layer in layers[::2]] == [(12, 8), (12, 12), (64, 12)]  # 8 -> k^2 = 64
    assert set(plain.state()["heads"]) == set()
    assert set(trainer.state()["heads"]) == {f"hypernetwork.layers.{i}.{p}" for i in (0, 2, 4)
                                             for p in ("weight", "bias")}
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in objective.hypernetwork.parameters()} <= optimised
    assert len(optimised) == len({id(p) for group in plain.optimizer.param_groups for p in group["params"]}) + 6
    assert plain.model.state_dict().keys() == trainer.model.state_dict().keys()  # the same network, same z_dim
    assert torch.equal(params_of(plain.model), params_of(trainer.model))  # and the same initial weights
    batch = trainer.next_batch(0)
    objective.losses(objective(trainer.model, batch), batch)["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in objective.hypernetwork.parameters())


@pytest.mark.parametrize("overrides, message", [(dict(equimod=True), "equimod"), (dict(base="byol"), "equimod"),
                                                (dict(split_dim=16), "split_dim")])
def test_equimod_byol_and_a_split_as_wide_as_z_are_refused(tmp_path, tiny_config, tiny_dataset, overrides, message):
    with pytest.raises(ValueError, match=message):
        Trainer(tiny_config(tmp_path, **{**SPLIT, **overrides}), dataset=tiny_dataset())


def test_a_short_run_logs_a_finite_split_loss_and_resumes_bit_exactly(tmp_path, tiny_config, tiny_dataset):
    data = tiny_dataset()
    straight = Trainer(tiny_config(tmp_path / "a", **SPLIT), dataset=data)
    weight = straight.objective.hypernetwork.layers[4].weight.detach().clone()
    straight.run()
    assert not torch.equal(straight.objective.hypernetwork.layers[4].weight, weight)  # the hypernetwork trains
    assert all(math.isfinite(record["split_equi"]) for record in straight.history)
    Trainer(tiny_config(tmp_path / "b", max_steps=3, **SPLIT), dataset=data).run()
    state = load_checkpoint(tmp_path / "b" / "run")
    assert state["step"] == 3 and state["objective"] == "split" and "hypernetwork.layers.4.weight" in state["heads"]
    resumed = Trainer(tiny_config(tmp_path / "b", **SPLIT), dataset=data, resume=True)
    resumed.run()
    assert resumed.step == straight.step == 8
    assert torch.equal(params_of(resumed.model), params_of(straight.model))
    assert torch.equal(params_of(resumed.objective), params_of(straight.objective))
    with pytest.raises(ValueError, match="split_weight"):
        Trainer(tiny_config(tmp_path / "b", **{**SPLIT, "split_weight": 2.0}), dataset=data, resume=True)


def test_the_new_fields_are_validated_and_a_config_from_before_them_loads_unchanged():
    cfg = TrainConfig.preset("cpu-live", equimod=False)
    old = {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if not k.startswith("split")}
    loaded = TrainConfig.from_dict(old)  # a config.json written before the split objective existed
    assert loaded == cfg and (loaded.split_weight, loaded.split_dim, loaded.split_hidden) == (1.0, 64, 64)
    assert changed_settings(old, cfg) == []
    TrainConfig.preset("cpu-live", equimod=False, z_dim=32).validate()  # split_dim only matters for "split"
    for field, value in [("split_weight", -1.0), ("split_weight", float("nan")), ("split_weight", True),
                         ("split_dim", 0), ("split_dim", 128), ("split_dim", 2.5), ("split_hidden", 0)]:
        with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
            TrainConfig.preset("cpu-live", objective="split", equimod=False, **{field: value}).validate()
    assert AUGSELF_GROUPS == ("crop", "colour")  # d: the relative crop (4) and colour (4) columns


def test_the_compare_variant_is_simclr_plus_the_split_with_the_same_recipe():
    simclr, split = (variant_config(name, 0, "cpu-live") for name in ("simclr", "split"))
    differ = {k for k, v in simclr.to_dict().items() if split.to_dict()[k] != v}
    assert differ == {"objective"} and split.objective == "split" and not split.equimod
    split.validate()  # split_dim 64 < z_dim 128 at cpu-live


def test_the_train_command_lists_and_trains_the_split_objective(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "split" in " ".join(capsys.readouterr().out.split())
    out = tmp_path / "run"
    code = cli.main(["train", "--preset", "cpu-live", "--objective", "split", "--no-equimod", "--max-steps", "2",
                     "--train-subset", "64", "--batch-size", "16", "--augment-overrides", "size=16",
                     "--proj-hidden", "32", "--z-dim", "16", "--split-dim", "4", "--split-hidden", "8",
                     "--log-every", "1", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    state = load_checkpoint(out)
    assert state["objective"] == "split" and state["config"]["split_dim"] == 4
    assert state["heads"]["hypernetwork.layers.4.weight"].shape == (16, 8)
    assert all(math.isfinite(record["split_equi"]) for record in state["metrics"])
