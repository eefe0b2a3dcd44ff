"""essl.py: the four rotations by hand, the loss against a float64 reference, the head it adds, a resume.

E-SSL is an objective of the one loop: SimCLR / BYOL (EquiMod on or off) plus a head on the backbone
features of view 1 made small and shown in its four rotations, telling which rotation it sees; its head
is optimised and checkpointed, its "rot" loss and "rot_acc" logged.
"""

import copy
import json

import pytest
import torch
from helpers import params_of

from equimod_edu import cli
from equimod_edu.checkpoint import load_checkpoint
from equimod_edu.compare import variant_config
from equimod_edu.config import TrainConfig
from equimod_edu.essl import ESSL, rotated_small_views
from equimod_edu.functional import four_rotations
from equimod_edu.objectives import SelfSupervised
from equimod_edu.run_folder import changed_settings
from equimod_edu.train import OBJECTIVES, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

ESSL_RUN = dict(objective="essl", equimod=False)  # the compare variant "essl": SimCLR + E-SSL


def test_the_four_rotations_turn_a_known_image_counter_clockwise_with_their_labels():
    image = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]).view(1, 1, 3, 3)
    batch = torch.cat([image, 10 * image])  # two images: each block of the output holds both
    turned, labels = four_rotations(batch)
    # a quarter turn counter-clockwise: the right column becomes the top row
    expected = [[[1, 2, 3], [4, 5, 6], [7, 8, 9]],
                [[3, 6, 9], [2, 5, 8], [1, 4, 7]],
                [[9, 8, 7], [6, 5, 4], [3, 2, 1]],
                [[7, 4, 1], [8, 5, 2], [9, 6, 3]]]
    assert turned.shape == (8, 1, 3, 3) and labels.dtype == torch.int64
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for k in range(4):
        assert turned[2 * k, 0].tolist() == expected[k]
        assert torch.equal(turned[2 * k + 1], 10 * turned[2 * k])
    # the official code's convention (label 1: flip the width, then swap height and width)
    x = torch.randn(5, 3, 4, 4)
    official = [x, x.flip(3).transpose(2, 3), x.flip(3).flip(2), x.transpose(2, 3).flip(3)]
    assert torch.equal(four_rotations(x)[0], torch.cat(official))
    with pytest.raises(ValueError, match="square"):
        four_rotations(torch.zeros(2, 3, 4, 5))


def test_the_small_view_is_view_1_averaged_over_pixel_blocks():
    x = torch.randn(2, 3, 32, 32)
    turned, labels = rotated_small_views(x, 16)
    blocks = x.view(2, 3, 16, 2, 16, 2).mean(dim=(3, 5))  # each small pixel: the mean of a 2 x 2 block
    assert turned.shape == (8, 3, 16, 16) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.allclose(turned[:2], blocks, atol=1e-6)
    assert torch.allclose(turned[6:], torch.rot90(blocks, 3, dims=(2, 3)), atol=1e-6)
    assert torch.equal(rotated_small_views(x, 32)[0][:2], x)  # the full size leaves the pixels alone


def _objective_and_batch(tmp_path, tiny_config, tiny_dataset, **overrides):
    trainer = Trainer(tiny_config(tmp_path, **{**ESSL_RUN, **overrides}), dataset=tiny_dataset())
    return trainer, trainer.objective, trainer.next_batch(0)


def test_the_loss_is_a_float64_reference_cross_entropy_added_with_its_weight(tmp_path, tiny_config, tiny_dataset):
    trainer, objective, batch = _objective_and_batch(tmp_path, tiny_config, tiny_dataset, essl_weight=0.3,
                                                     essl_size=8)
    out, logits, labels = objective(trainer.model, batch)
    n = batch.x_1.shape[0]
    assert logits.shape == (4 * n, 4) and labels.tolist() == [k for k in range(4) for _ in range(n)]
    losses = objective.losses((out, logits, labels), batch)
    # by hand in float64, from the same weights: 2 x 2 block means, quarter turns, backbone, head, cross-entropy
    small = batch.x_1.double().reshape(n, 3, 8, 2, 8, 2).mean(dim=(3, 5))
    turned = torch.cat([torch.rot90(small, k, dims=(2, 3)) for k in range(4)])
    backbone, head = copy.deepcopy(trainer.model.backbone).double(), copy.deepcopy(objective.head).double()
    reference_logits = head(backbone(turned))
    assert torch.allclose(logits.double(), reference_logits, atol=1e-4)
    log_p = reference_logits - reference_logits.logsumexp(dim=1, keepdim=True)
    reference = -log_p[torch.arange(4 * n), labels].mean()
    assert torch.allclose(losses["rot"].double(), reference, rtol=1e-5)
    assert losses["rot_acc"] == (reference_logits.argmax(1) == labels).double().mean()
    base = SelfSupervised.losses(objective, out, batch)
    assert torch.allclose(losses["loss"], base["loss"] + 0.3 * losses["rot"])
    assert set(objective.checked) == {"loss", "inv", "equi", "rot"} and objective.label == "simclr+essl"


@pytest.mark.parametrize("overrides", [dict(equimod=True), dict(base="byol", equimod=False)])
def test_essl_adds_its_term_to_any_base(tmp_path, tiny_config, tiny_dataset, overrides):
    trainer, objective, batch = _objective_and_batch(tmp_path, tiny_config, tiny_dataset, **overrides)
    losses = objective.losses(objective(trainer.model, batch), batch)
    assert all(torch.isfinite(losses[name]) for name in objective.checked)
    assert ("gain" in losses) == trainer.cfg.equimod
    assert objective.label == f"{trainer.cfg.base}{'+equimod' if trainer.cfg.equimod else ''}+essl"


def test_the_objective_adds_a_trained_head_and_leaves_the_model_and_its_views_alone(tmp_path, tiny_config,
                                                                                    tiny_dataset):
    data = tiny_dataset()
    plain = Trainer(tiny_config(tmp_path / "a", equimod=False), dataset=data)
    essl = Trainer(tiny_config(tmp_path / "b", essl_hidden=24, **ESSL_RUN), dataset=data)
    assert OBJECTIVES["essl"] is ESSL and type(essl.objective) is ESSL
    head = essl.objective.head
    feature_dim = essl.model.feature_dim
    assert [layer.weight.shape for layer in head.layers[::3]] == [(24, feature_dim), (24, 24), (4, 24)]
    assert set(plain.state()["heads"]) == set()
    assert set(essl.state()["heads"]) == {f"head.layers.{i}.{p}" for i in (0, 1, 3, 4, 6) for p in ("weight", "bias")}
    optimised = {id(p) for group in essl.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in head.parameters()} <= optimised
    assert len(optimised) == len({id(p) for group in plain.optimizer.param_groups for p in group["params"]}) + 10
    assert plain.model.state_dict().keys() == essl.model.state_dict().keys()  # the model is the same network
    assert torch.equal(params_of(plain.model), params_of(essl.model))  # and starts from the same weights
    batch = essl.next_batch(0)
    assert torch.equal(batch.x_1, plain.next_batch(0).x_1)  # nothing extra drawn: SimCLR's views, pixel for pixel
    essl.objective.losses(essl.net(batch), batch)["rot"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())  # the head learns
    assert all(p.grad is not None for p in essl.model.backbone.parameters())  # through the same backbone


def test_a_short_run_logs_finite_rot_and_resumes_bit_exactly(tmp_path, tiny_config, tiny_dataset):
    data = tiny_dataset()
    straight = Trainer(tiny_config(tmp_path / "a", **ESSL_RUN), dataset=data)
    head = straight.objective.head.layers[0].weight.detach().clone()
    straight.run()
    assert not torch.equal(straight.objective.head.layers[0].weight, head)  # the head trains
    assert all(torch.isfinite(torch.tensor([record["rot"], record["rot_acc"]])).all() for record in straight.history)
    Trainer(tiny_config(tmp_path / "b", max_steps=3, **ESSL_RUN), dataset=data).run()
    state = load_checkpoint(tmp_path / "b" / "run")
    assert state["step"] == 3 and state["objective"] == "essl" and "head.layers.0.weight" in state["heads"]
    resumed = Trainer(tiny_config(tmp_path / "b", **ESSL_RUN), dataset=data, resume=True)
    resumed.run()
    assert resumed.step == straight.step == 8
    assert torch.equal(params_of(resumed.model), params_of(straight.model))
    assert torch.equal(params_of(resumed.objective), params_of(straight.objective))
    with pytest.raises(ValueError, match="essl_weight"):
        Trainer(tiny_config(tmp_path / "b", essl_weight=1.0, **ESSL_RUN), dataset=data, resume=True)


def test_the_new_fields_are_validated_and_a_config_from_before_them_loads_unchanged():
    cfg = TrainConfig.preset("cpu-live", equimod=False)
    old = {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if not k.startswith("essl")}
    loaded = TrainConfig.from_dict(old)  # a config.json written before E-SSL existed
    assert loaded == cfg and (loaded.essl_weight, loaded.essl_hidden, loaded.essl_size) == (0.4, 512, 16)
    assert changed_settings(old, cfg) == []  # its run is reused or resumed, not trained again
    for field, value in [("essl_weight", -1.0), ("essl_weight", float("nan")), ("essl_weight", True),
                         ("essl_hidden", 0), ("essl_size", 1), ("essl_size", 16.0), ("essl_size", 33)]:
        with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
            TrainConfig.preset("cpu-live", objective="essl", **{field: value}).validate()
    TrainConfig.preset("cpu-live", augment_overrides={"size": 8}).validate()  # other objectives: any essl_size


def test_the_compare_variant_is_simclr_plus_essl_with_the_same_recipe():
    simclr, essl = (variant_config(name, 0, "cpu-live") for name in ("simclr", "essl"))
    differ = {k for k, v in simclr.to_dict().items() if essl.to_dict()[k] != v}
    assert differ == {"objective"} and essl.objective == "essl" and not essl.equimod


def test_the_train_command_lists_and_trains_the_essl_objective(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "essl" in help_text and "--essl-weight" in help_text and "--essl-size" in help_text
    out = tmp_path / "run"
    code = cli.main(["train", "--preset", "cpu-live", "--objective", "essl", "--no-equimod", "--max-steps", "2",
                     "--train-subset", "64", "--batch-size", "16", "--augment-overrides", "size=16",
                     "--proj-hidden", "32", "--essl-hidden", "16", "--essl-size", "8", "--essl-weight", "0.5",
                     "--log-every", "1", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    state = load_checkpoint(out)
    assert state["objective"] == "essl" and (state["config"]["essl_size"], state["config"]["essl_weight"]) == (8, 0.5)
    assert state["heads"]["head.layers.6.weight"].shape == (4, 16)
    assert all(torch.isfinite(torch.tensor(record["rot"])) for record in state["metrics"])
