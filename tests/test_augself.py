"""augself.py: the relative parameters by hand, the loss against a float64 reference, the head it adds, a resume.

AugSelf is an objective of the one loop: SimCLR / BYOL (EquiMod on or off) plus an MLP on [h_1; h_2]
regressing augself_targets(t_1, t_2); its head is optimised and checkpointed, its "aug" loss logged.
"""

import json

import pytest
import torch
from helpers import params_of

from equimod_edu import cli
from equimod_edu.augment import AugmentationConfig, AugmentationParams
from equimod_edu.augself import AUGSELF_COLUMNS, AugSelf, augself_scale, augself_targets, crop_geometry
from equimod_edu.checkpoint import load_checkpoint
from equimod_edu.compare import variant_config
from equimod_edu.config import AUGSELF_GROUPS, TrainConfig
from equimod_edu.objectives import SelfSupervised
from equimod_edu.run_folder import changed_settings
from equimod_edu.train import OBJECTIVES, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

AUGSELF = dict(objective="augself", equimod=False)  # the compare variant "augself": SimCLR + AugSelf


def _params(crop, flip, brightness, contrast, saturation, hue) -> AugmentationParams:
    """Three rows of parameters: the given crops, flips and jitter factors, identity elsewhere."""
    params, real = AugmentationParams.identity(len(crop)), lambda values: torch.tensor(values, dtype=torch.float32)
    params.crop, params.flip = real(crop), torch.tensor(flip)
    params.brightness, params.contrast = real(brightness), real(contrast)
    params.saturation, params.hue = real(saturation), real(hue)
    params.jitter = (params.brightness != 1) | (params.contrast != 1) | (params.saturation != 1) | (params.hue != 0)
    return params


def test_the_relative_parameters_match_a_hand_computation_flip_mirroring_included():
    aug = AugmentationConfig.cifar10()  # brightness, contrast, saturation 0.4: factors in [0.6, 1.4]; hue 0.1
    view_1 = _params(crop=[[0.1, 0.2, 0.5, 0.4], [0.0, 0.5, 0.5, 0.5], [0.2, 0.1, 0.6, 0.6]],
                     flip=[False, True, True],
                     brightness=[1.2, 1.0, 1.0], contrast=[0.8, 1.0, 1.0], saturation=[1.0, 1.0, 1.1], hue=[0.05, 0, 0])
    view_2 = _params(crop=[[0.0, 0.0, 1.0, 1.0], [0.5, 0.0, 0.5, 0.5], [0.2, 0.1, 0.6, 0.6]],
                     flip=[False, False, True],
                     brightness=[1.0, 0.6, 1.0], contrast=[1.0, 1.4, 1.0], saturation=[1.0, 1.4, 1.0], hue=[0, -0.1, 0])
    # row 0: centres (0.35, 0.4) and (0.5, 0.5), sizes (0.5, 0.4) and (1, 1); factors / (2 * 0.4), hue / 0.2
    # row 1: view 1's x-centre 0.75 is mirrored to 0.25 (flipped), the same as view 2's; view 1 has no jitter
    # row 2: the same crop, both flipped: no crop difference; saturation 0.1 apart
    expected = torch.tensor([[-0.15, -0.1, -0.5, -0.6, 0.25, -0.25, 0.0, 0.25],
                             [-0.5, 0.0, 0.0, 0.0, 0.5, -0.5, -0.5, 0.5],
                             [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.125, 0.0]])
    assert torch.allclose(crop_geometry(view_1)[1], torch.tensor([0.25, 0.25, 0.5, 0.5]))
    targets = augself_targets(view_1, view_2, aug)
    assert targets.shape == (3, 8) and targets.dtype == torch.float32
    assert torch.allclose(targets, expected, atol=1e-6)
    assert torch.allclose(augself_targets(view_1, view_2, aug, ("colour",)), expected[:, 4:], atol=1e-6)
    assert torch.allclose(augself_targets(view_1, view_2, aug, ("colour", "crop")),
                          torch.cat([expected[:, 4:], expected[:, :4]], 1), atol=1e-6)
    assert tuple(AUGSELF_COLUMNS) == AUGSELF_GROUPS
    with pytest.raises(ValueError, match="choose one or more"):
        augself_targets(view_1, view_2, aug, ("color",))


def test_the_hue_difference_is_taken_around_the_circle():
    aug = AugmentationConfig.synthetic()  # hue +-0.5 turn: differences up to a whole turn
    view_1 = _params([[0, 0, 1, 1]] * 2, [False] * 2, [1.0] * 2, [1.0] * 2, [1.0] * 2, hue=[0.4, 0.1])
    view_2 = _params([[0, 0, 1, 1]] * 2, [False] * 2, [1.0] * 2, [1.0] * 2, [1.0] * 2, hue=[-0.4, -0.2])
    # 0.8 turn apart is -0.2 turn around the circle; 0.3 stays 0.3; both divided by min(2 * 0.5, 0.5)
    assert torch.allclose(augself_targets(view_1, view_2, aug, ("colour",))[:, 3], torch.tensor([-0.4, 0.6]))


@pytest.mark.parametrize("preset", ["cifar10", "synthetic"])
def test_sampled_relative_parameters_lie_in_minus_one_one_and_swapping_the_views_negates_them(preset):
    aug = AugmentationConfig.preset(preset)
    g = torch.Generator().manual_seed(0)
    params_1, params_2 = aug.sample(256, generator=g), aug.sample(256, generator=g, view=1)
    forward, backward = augself_targets(params_1, params_2, aug), augself_targets(params_2, params_1, aug)
    assert forward.abs().max() <= 1 + 1e-6
    assert torch.allclose(forward, -backward, atol=1e-6)
    assert forward[:, 4:].abs().amax(0).min() > 0.3  # every colour column varies (none stuck at 0)


@pytest.mark.parametrize("preset", ["cifar10", "synthetic"])
def test_the_scale_is_each_columns_std_so_standardised_targets_have_variance_one(preset):
    aug = AugmentationConfig.preset(preset)
    scale = augself_scale(aug)
    assert scale.shape == (8,) and (scale > 0).all()
    assert torch.equal(augself_scale(aug, ("colour",)), scale[4:])
    g = torch.Generator().manual_seed(123)  # other draws than the scale's own (seed 0)
    params_1, params_2 = aug.sample(8192, generator=g), aug.sample(8192, generator=g, view=1)
    standardised = augself_targets(params_1, params_2, aug) / scale
    assert torch.allclose(standardised.var(0), torch.ones(8), atol=0.06)
    # a strength of 0 draws no change: its column stays 0, divided by 1
    still = AugmentationConfig.preset(preset, hue=0.0)
    assert augself_scale(still)[7] == 1.0


def _objective_and_batch(tmp_path, tiny_config, tiny_dataset, **overrides):
    trainer = Trainer(tiny_config(tmp_path, **{**AUGSELF, **overrides}), dataset=tiny_dataset())
    return trainer, trainer.objective, trainer.next_batch(0)


def test_the_loss_is_a_float64_reference_mse_added_with_its_weight_and_zero_for_exact_predictions(
        tmp_path, tiny_config, tiny_dataset):
    trainer, objective, batch = _objective_and_batch(tmp_path, tiny_config, tiny_dataset, augself_weight=0.5)
    out, predicted = objective(trainer.model, batch)
    n = batch.x_1.shape[0]
    assert predicted.shape == (2 * n, 8)
    losses = objective.losses((out, predicted), batch)
    base = SelfSupervised.losses(objective, out, batch)
    targets = (augself_targets(batch.params_1, batch.params_2, trainer.aug) / augself_scale(trainer.aug)).double()
    reference = ((predicted.double() - torch.cat([targets, -targets])) ** 2).mean()
    assert torch.allclose(losses["aug"].double(), reference, rtol=1e-5)
    assert torch.allclose(losses["loss"], base["loss"] + 0.5 * losses["aug"])
    assert set(objective.checked) == {"loss", "inv", "equi", "aug"} and objective.label == "simclr+augself"
    exact = objective.losses((out, torch.cat([targets, -targets]).float()), batch)
    assert exact["aug"] == 0 and torch.equal(exact["loss"], base["loss"])
    # the prediction for the swapped pair is the head on [h_2; h_1]
    h_1, h_2 = out.h.chunk(2)
    assert torch.allclose(predicted[n:], objective.head(torch.cat([h_2, h_1], 1)), atol=1e-6)


@pytest.mark.parametrize("overrides", [dict(equimod=True), dict(base="byol", equimod=False)])
def test_augself_adds_its_term_to_any_base(tmp_path, tiny_config, tiny_dataset, overrides):
    trainer, objective, batch = _objective_and_batch(tmp_path, tiny_config, tiny_dataset, **overrides)
    losses = objective.losses(objective(trainer.model, batch), batch)
    assert all(torch.isfinite(losses[name]) for name in objective.checked)
    assert ("gain" in losses) == trainer.cfg.equimod
    assert objective.label == f"{trainer.cfg.base}{'+equimod' if trainer.cfg.equimod else ''}+augself"


def test_the_objective_adds_the_head_to_the_optimiser_and_the_checkpoint_and_leaves_the_model_alone(
        tmp_path, tiny_config, tiny_dataset):
    data = tiny_dataset()
    plain = Trainer(tiny_config(tmp_path / "a", equimod=False), dataset=data)
    augself = Trainer(tiny_config(tmp_path / "b", augself_hidden=24, augself_groups=("crop",), **AUGSELF),
                      dataset=data)
    assert OBJECTIVES["augself"] is AugSelf and type(augself.objective) is AugSelf
    head = augself.objective.head
    assert [layer.weight.shape for layer in head.layers[::2]] == [(24, 2 * augself.model.feature_dim), (24, 24),
                                                                  (4, 24)]
    assert set(plain.state()["heads"]) == set()
    assert set(augself.state()["heads"]) == {f"head.layers.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    optimised = {id(p) for group in augself.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in head.parameters()} <= optimised
    assert len(optimised) == len({id(p) for group in plain.optimizer.param_groups for p in group["params"]}) + 6
    assert plain.model.state_dict().keys() == augself.model.state_dict().keys()  # the model is the same network
    assert torch.equal(params_of(plain.model), params_of(augself.model))  # and starts from the same weights


def test_a_short_run_logs_a_finite_aug_and_resumes_bit_exactly(tmp_path, tiny_config, tiny_dataset):
    data = tiny_dataset()
    straight = Trainer(tiny_config(tmp_path / "a", **AUGSELF), dataset=data)
    head = straight.objective.head.layers[0].weight.detach().clone()
    straight.run()
    assert not torch.equal(straight.objective.head.layers[0].weight, head)  # the head trains
    assert all("aug" in record and torch.isfinite(torch.tensor(record["aug"])) for record in straight.history)
    Trainer(tiny_config(tmp_path / "b", max_steps=3, **AUGSELF), dataset=data).run()
    state = load_checkpoint(tmp_path / "b" / "run")
    assert state["step"] == 3 and state["objective"] == "augself" and "head.layers.0.weight" in state["heads"]
    resumed = Trainer(tiny_config(tmp_path / "b", **AUGSELF), dataset=data, resume=True)
    resumed.run()
    assert resumed.step == straight.step == 8
    assert torch.equal(params_of(resumed.model), params_of(straight.model))
    assert torch.equal(params_of(resumed.objective), params_of(straight.objective))
    with pytest.raises(ValueError, match="augself_weight"):
        Trainer(tiny_config(tmp_path / "b", augself_weight=2.0, **AUGSELF), dataset=data, resume=True)


def test_the_new_fields_are_validated_and_a_config_from_before_them_loads_unchanged():
    cfg = TrainConfig.preset("cpu-live", equimod=False)
    old = {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if not k.startswith("augself")}
    loaded = TrainConfig.from_dict(old)  # a config.json written before AugSelf existed
    assert loaded == cfg and loaded.augself_groups == ("crop", "colour") and loaded.augself_weight == 1.0
    assert changed_settings(old, cfg) == []  # its run is reused or resumed, not trained again
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))).augself_groups == ("crop", "colour")
    for field, value in [("augself_groups", ("color",)), ("augself_groups", ()), ("augself_groups", ("crop", "crop")),
                         ("augself_weight", -1.0), ("augself_weight", float("nan")), ("augself_hidden", 0)]:
        with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
            TrainConfig.preset("cpu-live", objective="augself", **{field: value}).validate()


def test_the_compare_variant_is_simclr_plus_augself_with_the_same_recipe():
    simclr, augself = (variant_config(name, 0, "cpu-live") for name in ("simclr", "augself"))
    differ = {k for k, v in simclr.to_dict().items() if augself.to_dict()[k] != v}
    assert differ == {"objective"} and augself.objective == "augself" and not augself.equimod


def test_the_train_command_lists_and_trains_the_augself_objective(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "augself" in " ".join(capsys.readouterr().out.split())
    out = tmp_path / "run"
    code = cli.main(["train", "--preset", "cpu-live", "--objective", "augself", "--no-equimod", "--max-steps", "2",
                     "--train-subset", "64", "--batch-size", "16", "--augment-overrides", "size=16",
                     "--proj-hidden", "32", "--augself-hidden", "16", "--augself-groups", "colour",
                     "--log-every", "1", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    state = load_checkpoint(out)
    assert state["objective"] == "augself" and tuple(state["config"]["augself_groups"]) == ("colour",)
    assert state["heads"]["head.layers.4.weight"].shape == (4, 16)
    assert all(torch.isfinite(torch.tensor(record["aug"])) for record in state["metrics"])
