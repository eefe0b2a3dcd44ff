"""objectives.py: what each objective asks of a batch, the losses it returns, the heads it owns.

Every objective of the registry (train.OBJECTIVES) gets the batch its ``needs`` declare and returns
``{"loss", its checked terms, ...}`` as finite () tensors; an objective's own modules are optimised
and checkpointed with the model; a new objective is a subclass plus one registry entry.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import params_of
from torch import nn

from equimod_edu import train as train_module
from equimod_edu.checkpoint import load_checkpoint
from equimod_edu.models import EquiModModel, byol_momentum
from equimod_edu.objectives import SelfSupervised, Supervised, supervised_augmentation
from equimod_edu.train import OBJECTIVES, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

# One case per objective (and base / EquiMod variant), named by the objective's label: tiny_config overrides.
CASES = {
    "simclr+equimod": dict(),
    "simclr": dict(equimod=False),
    "byol+equimod": dict(base="byol"),
    "simclr+augself": dict(objective="augself", equimod=False),
    "simclr+care": dict(objective="care", equimod=False, care_group_size=4),
    "simclr+cassle": dict(objective="cassle", equimod=False),
    "simclr+essl": dict(objective="essl", equimod=False, essl_size=8),
    "simclr+split": dict(objective="split", equimod=False, split_dim=8),
    "supervised": dict(objective="supervised", equimod=False, optimizer="adamw", lr=3e-3),
}


def test_every_registered_objective_has_a_case_here():
    assert {case.get("objective", "self-supervised") for case in CASES.values()} == set(OBJECTIVES)


@pytest.mark.parametrize("case", CASES)
def test_make_batch_gives_each_objective_what_its_needs_ask_for(tmp_path, case, tiny_config, tiny_dataset):
    trainer = Trainer(tiny_config(tmp_path, **CASES[case]), dataset=tiny_dataset())
    objective, needs = trainer.objective, trainer.objective.needs
    assert type(objective) is OBJECTIVES[trainer.cfg.objective] and objective.label == case
    batch = trainer.next_batch(0)
    n, p = trainer.cfg.batch_size, trainer.aug.encoded_dim
    assert batch.x_1.shape == (n, 3, 16, 16) and len(batch.params_1) == n and batch.t_1.shape == (n, p)
    two = needs.views == 2
    assert [field is not None for field in (batch.x_2, batch.params_2, batch.t_2)] == [two] * 3
    assert (batch.x_o is not None) == needs.x_o
    assert [field is not None for field in (batch.x_3, batch.x_4, batch.t_3, batch.t_4)] == [needs.grouped_pair] * 4
    assert (batch.labels is not None) == needs.labels
    if needs.labels:
        assert batch.labels.dtype == torch.int64 and batch.labels.shape == (n,)
        assert set(batch.labels.tolist()) <= set(range(4))  # tiny_dataset's 4 classes


@pytest.mark.parametrize("case", CASES)
def test_an_objectives_losses_hold_the_loss_and_its_checked_terms_as_finite_scalars(tmp_path, case, tiny_config,
                                                                                    tiny_dataset):
    trainer = Trainer(tiny_config(tmp_path, **CASES[case]), dataset=tiny_dataset())
    objective, batch = trainer.objective, trainer.next_batch(0)
    losses = objective.losses(objective(trainer.model, batch), batch)
    assert "loss" in objective.checked and set(objective.checked) <= set(losses)
    assert all(value.shape == () and value.dtype.is_floating_point for value in losses.values())
    assert all(torch.isfinite(value) for value in losses.values())
    assert losses["loss"].requires_grad
    assert ("gain" in losses) == case.endswith("+equimod")  # EquiMod's diagnostic
    assert ("train_acc" in losses) == (case == "supervised")


def test_the_supervised_classifier_is_optimised_and_checkpointed_and_the_other_heads_are_frozen(
        tmp_path, tiny_config, tiny_dataset):
    trainer = Trainer(tiny_config(tmp_path, **CASES["supervised"]), dataset=tiny_dataset())
    objective, model = trainer.objective, trainer.model
    assert objective.classifier.in_features == model.feature_dim and objective.classifier.out_features == 4
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in [*objective.classifier.parameters(), *model.backbone.parameters()]} == optimised
    frozen = [p for name, module in model.named_children() if name != "backbone" for p in module.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert set(trainer.state()["heads"]) == {"classifier.weight", "classifier.bias"}
    aug = trainer.cfg.augmentation()
    assert Supervised.augmentation(aug) == supervised_augmentation(aug) == trainer.aug
    assert SelfSupervised.augmentation(aug) is aug


def test_byol_moves_its_target_after_each_step_and_simclr_has_no_target(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, base="byol")
    torch.manual_seed(0)
    model = EquiModModel(cfg.model_config())
    online, target = model.projector.layers[0].weight, model.target_projector.layers[0].weight
    with torch.no_grad():
        online.add_(1.0)  # the online network moved away from its copy
    before = target.detach().clone()
    SelfSupervised(cfg, model).after_step(model, 3, 10)
    tau = byol_momentum(3, 10, cfg.ema_base)
    assert torch.allclose(target, tau * before + (1 - tau) * online.detach())
    simclr_cfg = tiny_config(tmp_path, base="simclr")
    simclr = EquiModModel(simclr_cfg.model_config())
    before = params_of(simclr)
    SelfSupervised(simclr_cfg, simclr).after_step(simclr, 3, 10)
    assert torch.equal(params_of(simclr), before)


class ParameterDifference(SelfSupervised):
    """AugSelf's idea in miniature: a head on [h_1; h_2] regresses t_1 - t_2, added to the base loss."""

    checked = (*SelfSupervised.checked, "difference")

    def __init__(self, cfg, model, aug=None, n_classes=None):
        super().__init__(cfg, model, aug, n_classes)
        self.head = nn.Linear(2 * model.feature_dim, aug.encoded_dim)

    def forward(self, model, batch):
        out = super().forward(model, batch)
        h_1, h_2 = out.h[-2 * len(batch.x_1):].chunk(2)  # h is [x_o;] x_1; x_2
        return out, self.head(torch.cat([h_1, h_2], 1))

    def losses(self, out, batch):
        out, predicted = out
        losses = super().losses(out, batch)
        losses["difference"] = F.mse_loss(predicted, batch.t_1 - batch.t_2)
        losses["loss"] = losses["loss"] + losses["difference"]
        return losses


def test_a_new_objective_is_a_subclass_and_one_registry_entry_and_its_head_trains_and_is_checkpointed(
        tmp_path, monkeypatch, tiny_config, tiny_dataset):
    monkeypatch.setitem(train_module.OBJECTIVES, "parameter-difference", ParameterDifference)
    trainer = Trainer(tiny_config(tmp_path, objective="parameter-difference", max_steps=2), dataset=tiny_dataset())
    head = trainer.objective.head
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in head.parameters()} <= optimised
    assert {id(p) for p in trainer.model.parameters() if p.requires_grad} <= optimised
    initial = head.weight.detach().clone()
    trainer.run()
    assert not torch.equal(head.weight, initial)
    assert "difference" in trainer.history[-1]
    state = load_checkpoint(tmp_path / "run")
    assert state["objective"] == "parameter-difference" and set(state["heads"]) == {"head.weight", "head.bias"}
    assert torch.equal(state["heads"]["head.weight"], head.weight.detach())


def test_the_supervised_objective_runs_in_the_same_loop_its_head_trained_checkpointed_and_resumed(
        tmp_path, tiny_config, tiny_dataset):
    data = tiny_dataset()
    supervised = dict(objective="supervised", equimod=False, optimizer="adamw", lr=3e-3)
    straight = Trainer(tiny_config(tmp_path / "a", **supervised), dataset=data)
    head = straight.objective.classifier.weight.detach().clone()
    straight.run()
    assert not torch.equal(straight.objective.classifier.weight, head)  # the head is in the optimiser
    assert {"loss", "train_acc"} <= set(straight.history[-1]) and straight.objective.needs.views == 1
    Trainer(tiny_config(tmp_path / "b", max_steps=3, **supervised), dataset=data).run()
    state = load_checkpoint(tmp_path / "b" / "run")
    assert state["objective"] == "supervised" and set(state["heads"]) == {"classifier.weight", "classifier.bias"}
    resumed = Trainer(tiny_config(tmp_path / "b", **supervised), dataset=data, resume=True)
    resumed.run()
    assert torch.equal(params_of(resumed.model), params_of(straight.model))
    assert torch.equal(resumed.objective.classifier.weight, straight.objective.classifier.weight)
    with pytest.raises(ValueError, match="TrainConfig.objective"):
        Trainer(tiny_config(tmp_path / "c", objective="no-such-objective"), dataset=data)
    assert not (tmp_path / "c").exists()
