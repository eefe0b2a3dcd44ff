"""cassle.py: the loss against a float64 reference, the conditioned projector it adds, a run and its resume.

CASSLE is an objective of the one loop: SimCLR (or BYOL) whose projector reads [h; e(t)], e an MLP of
the view's encoded parameters t; the model's own projector is frozen, the base loss unchanged.
"""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import params_of

from equimod_edu import cli
from equimod_edu.cassle import CASSLE
from equimod_edu.checkpoint import load_checkpoint
from equimod_edu.compare import variant_config
from equimod_edu.config import TrainConfig
from equimod_edu.run_folder import changed_settings
from equimod_edu.train import OBJECTIVES, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

CASSLE_RUN = dict(objective="cassle", equimod=False)  # the compare variant "cassle": SimCLR + CASSLE


def _objective_and_batch(tmp_path, tiny_config, tiny_dataset, **overrides):
    trainer = Trainer(tiny_config(tmp_path, **{**CASSLE_RUN, **overrides}), dataset=tiny_dataset())
    return trainer, trainer.objective, trainer.next_batch(0)


def test_the_loss_is_nt_xent_on_the_conditioned_projection_against_a_float64_reference(
        tmp_path, tiny_config, tiny_dataset):
    trainer, objective, batch = _objective_and_batch(tmp_path, tiny_config, tiny_dataset, temperature_inv=0.3)
    model64, conditioned64 = copy.deepcopy(trainer.model).double(), copy.deepcopy(objective.conditioned).double()
    losses = objective.losses(objective(trainer.model, batch), batch)
    # by hand, in float64: h of both views, [h; e(t)], the projector, then NT-Xent (cosine / 0.3, self masked)
    n = batch.x_1.shape[0]
    h = model64.features(torch.cat([batch.x_1, batch.x_2]).double())
    e = conditioned64.encoder.layers(torch.cat([batch.t_1, batch.t_2]).double())
    z = F.normalize(conditioned64.projector.layers(torch.cat([h, e], dim=1)), dim=1)
    logits = (z @ z.T / 0.3).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    reference = F.cross_entropy(logits, partner)
    assert torch.allclose(losses["inv"].double(), reference, rtol=1e-5)
    assert torch.equal(losses["loss"], losses["inv"]) and losses["equi"] == 0
    assert torch.isclose(losses["inv_chance"], torch.log(torch.tensor(2.0 * n - 1)))
    assert losses["inv_top1"] == (logits.argmax(1) == partner).double().mean().float()
    assert objective.label == "simclr+cassle" and "gain" not in losses


def test_the_switch_conditions_the_projector_on_t_and_trains_its_encoder(tmp_path, tiny_config, tiny_dataset):
    data = tiny_dataset()
    plain = Trainer(tiny_config(tmp_path / "a", equimod=False), dataset=data)
    trainer = Trainer(tiny_config(tmp_path / "b", cassle_embed=8, cassle_hidden=12, cassle_depth=3, **CASSLE_RUN),
                      dataset=data)
    objective, model = trainer.objective, trainer.model
    assert OBJECTIVES["cassle"] is CASSLE and type(objective) is CASSLE
    linears = [m for m in objective.conditioned.modules() if isinstance(m, torch.nn.Linear)]
    p = trainer.aug.encoded_dim
    assert [tuple(m.weight.shape) for m in linears] == [(12, p), (12, 12), (8, 12),  # e: 3 layers, 12 wide, 8 out
                                                        (32, model.feature_dim + 8), (32, 32), (16, 32)]  # g
    assert model.projector.layers[0].in_features == model.feature_dim  # the model's own, unchanged and frozen
    assert not any(q.requires_grad for q in model.projector.parameters())
    optimised = {id(q) for group in trainer.optimizer.param_groups for q in group["params"]}
    assert {id(q) for q in objective.conditioned.parameters()} <= optimised
    assert not {id(q) for q in model.projector.parameters()} & optimised
    heads = trainer.state()["heads"]
    assert {"conditioned.encoder.layers.0.weight", "conditioned.projector.layers.0.weight"} <= set(heads)
    assert torch.equal(params_of(plain.model), params_of(model))  # the model starts from SimCLR's weights
    # the encoder's parameters receive gradients, and z moves with t
    batch = trainer.next_batch(0)
    objective.losses(objective(model, batch), batch)["loss"].backward()
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in objective.conditioned.encoder.parameters())
    objective.eval()
    h = model.features(batch.x_1)
    assert not torch.allclose(objective.conditioned(h, batch.t_1), objective.conditioned(h, batch.t_2))


def test_param_groups_hide_columns_of_t_from_the_projector_and_equimod_is_refused(tmp_path, tiny_config, tiny_dataset):
    trainer, objective, batch = _objective_and_batch(tmp_path, tiny_config, tiny_dataset, param_groups=("crop",))
    crop = trainer.aug.encoded_groups()["crop"]
    objective.eval()
    h, t = trainer.model.features(batch.x_1), batch.t_1
    others = t.clone()
    others[:, crop.stop:] += 1.0  # every column but the crop box changed: z does not move
    assert torch.equal(objective.conditioned(h, t), objective.conditioned(h, others))
    moved = t.clone()
    moved[:, crop] += 1.0
    assert not torch.allclose(objective.conditioned(h, t), objective.conditioned(h, moved))
    with pytest.raises(ValueError, match="equimod=False"):
        Trainer(tiny_config(tmp_path / "e", objective="cassle", equimod=True), dataset=tiny_dataset())


def test_with_t_zeroed_and_the_models_projector_cassle_is_simclr(tmp_path, tiny_config, tiny_dataset):
    # e(0) is a constant (BN's shift), so g's first BN removes it: [h; e(0)] with zero weights on e's
    # columns and the model's projector weights on h's gives SimCLR's z, loss and backbone gradient
    data = tiny_dataset()
    plain = Trainer(tiny_config(tmp_path / "a", equimod=False), dataset=data)
    trainer = Trainer(tiny_config(tmp_path / "b", **CASSLE_RUN), dataset=data)
    conditioned = trainer.objective.conditioned
    conditioned.mask = torch.zeros(trainer.aug.encoded_dim)
    with torch.no_grad():
        for mine, theirs in zip(conditioned.projector.layers, plain.model.projector.layers):
            if isinstance(mine, torch.nn.Linear):
                mine.weight.zero_()[:, : theirs.in_features] = theirs.weight
            elif isinstance(mine, torch.nn.BatchNorm1d) and mine.affine:
                mine.load_state_dict(theirs.state_dict())
    batch = plain.next_batch(0)
    expected, got = (t.objective.losses(t.objective(t.model, batch), batch)["loss"] for t in (plain, trainer))
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)
    expected.backward()
    got.backward()
    for theirs, mine in zip(plain.model.backbone.parameters(), trainer.model.backbone.parameters()):
        assert torch.allclose(mine.grad, theirs.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("base", ["simclr", "byol"])
def test_a_short_run_trains_the_conditioned_projector_and_resumes_bit_exactly(tmp_path, tiny_config, tiny_dataset,
                                                                               base):
    data, run = tiny_dataset(), dict(CASSLE_RUN, base=base)
    straight = Trainer(tiny_config(tmp_path / "a", **run), dataset=data)
    start = params_of(straight.objective).clone()
    straight.run()
    assert not torch.equal(params_of(straight.objective), start)  # e and g train (BYOL: and the EMA target)
    assert all(torch.isfinite(torch.tensor(record["loss"])) for record in straight.history)
    Trainer(tiny_config(tmp_path / "b", max_steps=3, **run), dataset=data).run()
    state = load_checkpoint(tmp_path / "b" / "run")
    assert state["step"] == 3 and state["objective"] == "cassle"
    assert "conditioned.encoder.layers.0.weight" in state["heads"]
    assert ("target.projector.layers.0.weight" in state["heads"]) == (base == "byol")
    resumed = Trainer(tiny_config(tmp_path / "b", **run), dataset=data, resume=True)
    resumed.run()
    assert resumed.step == straight.step == 8
    assert torch.equal(params_of(resumed.model), params_of(straight.model))
    assert torch.equal(params_of(resumed.objective), params_of(straight.objective))
    if base == "byol":  # the target is an EMA of the online conditioned projector, not a frozen copy
        online, target = straight.objective.conditioned, straight.objective.target
        assert not torch.equal(params_of(target), start[: params_of(target).numel()])
        assert not torch.equal(params_of(online), params_of(target))


def test_the_new_fields_are_validated_and_a_config_from_before_them_loads_unchanged():
    cfg = TrainConfig.preset("cpu-live", equimod=False)
    old = {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if not k.startswith("cassle")}
    loaded = TrainConfig.from_dict(old)  # a config.json written before CASSLE existed
    assert loaded == cfg and (loaded.cassle_embed, loaded.cassle_hidden, loaded.cassle_depth) == (64, 64, 6)
    assert changed_settings(old, cfg) == []
    for field in ("cassle_embed", "cassle_hidden", "cassle_depth"):
        for value in (0, 1.5, True):
            with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
                TrainConfig.preset("cpu-live", objective="cassle", equimod=False, **{field: value}).validate()


def test_the_compare_variant_is_simclr_plus_cassle_with_the_same_recipe():
    simclr, cassle = (variant_config(name, 0, "cpu-live") for name in ("simclr", "cassle"))
    differ = {k for k, v in simclr.to_dict().items() if cassle.to_dict()[k] != v}
    assert differ == {"objective"} and cassle.objective == "cassle" and not cassle.equimod


def test_the_train_command_lists_and_trains_the_cassle_objective(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "cassle" in help_text and "--cassle-embed" in help_text
    out = tmp_path / "run"
    code = cli.main(["train", "--preset", "cpu-live", "--objective", "cassle", "--no-equimod", "--max-steps", "2",
                     "--train-subset", "64", "--batch-size", "16", "--augment-overrides", "size=16",
                     "--proj-hidden", "32", "--cassle-embed", "8", "--cassle-hidden", "8", "--cassle-depth", "2",
                     "--log-every", "1", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    state = load_checkpoint(out)
    assert state["objective"] == "cassle" and state["config"]["cassle_embed"] == 8
    assert state["heads"]["conditioned.projector.layers.0.weight"].shape == (32, 256 + 8)
    assert all(torch.isfinite(torch.tensor(record["loss"])) for record in state["metrics"])
