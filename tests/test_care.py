"""care.py and the engine's group-shared draws: groups by hand, the loss against a float64 reference, a resume.

CARE is an objective of the one loop: SimCLR / BYOL (EquiMod on or off) plus a loss matching the Gram matrices
of two views within groups sharing one augmentation per view; no head. Those views are an extra pair beside
SimCLR's own (care_pair "separate", the paper's) or SimCLR's pair itself, drawn shared ("shared").
"""

import dataclasses
import json

import pytest
import torch
from helpers import params_of
from PIL import Image

from equimod_edu import cli
from equimod_edu.augment import AugmentationConfig, AugmentationParams, share_within_groups
from equimod_edu.augment_cuda import CudaAugment
from equimod_edu.care import CARE, care_loss
from equimod_edu.checkpoint import load_checkpoint
from equimod_edu.compare import variant_config
from equimod_edu.config import TrainConfig
from equimod_edu.objectives import SelfSupervised
from equimod_edu.run_folder import changed_settings
from equimod_edu.train import OBJECTIVES, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

CARE_RUN = dict(objective="care", equimod=False, care_group_size=4)  # SimCLR + CARE, 4 groups of the tiny batch 16


def _same_rows(params: AugmentationParams, i: int, j: int) -> bool:
    return all(torch.equal(getattr(params, f.name)[i], getattr(params, f.name)[j]) for f in dataclasses.fields(params))


def test_share_within_groups_gives_each_row_the_first_row_of_its_group():
    params = AugmentationParams.identity(6)
    params.crop = torch.tensor([[0.1 * i, 0.0, 0.5, 0.4] for i in range(6)])
    params.flip = torch.tensor([True, False, False, False, True, True])
    params.brightness = torch.arange(6.0)
    params.order = torch.stack([torch.arange(4).roll(i) for i in range(6)])
    shared = share_within_groups(params, 3)  # groups rows 0-2 and 3-5
    assert torch.equal(shared.crop[:, 0], torch.tensor([0.0, 0.0, 0.0, 0.3, 0.3, 0.3]))
    assert shared.flip.tolist() == [True] * 3 + [False] * 3
    assert shared.brightness.tolist() == [0.0] * 3 + [3.0] * 3
    assert torch.equal(shared.order[4], torch.arange(4).roll(3))
    assert all(_same_rows(shared, 3 * (i // 3), i) for i in range(6))
    assert torch.equal(params.brightness, torch.arange(6.0))  # the input is not changed
    assert all(_same_rows(share_within_groups(params, 1), i, i) for i in range(6))
    assert torch.equal(share_within_groups(params, 1).crop, params.crop)  # groups of one: no change
    for bad in (4, 0, True, 2.0):
        with pytest.raises(ValueError, match="group_size"):
            share_within_groups(params, bad)


@pytest.mark.parametrize("engine", ["config", "cuda-path"])
def test_grouped_views_share_each_draw_before_a_process_takes_its_rows(engine):
    aug = AugmentationConfig.synthetic().replace(size=16)
    augmenter = aug if engine == "config" else CudaAugment(aug, "cpu")
    images = (torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    whole = augmenter.views(images, torch.Generator().manual_seed(5), group_size=4)
    independent = augmenter.views(images, torch.Generator().manual_seed(5))
    for params, first in ((whole.params_1, independent.params_1), (whole.params_2, independent.params_2)):
        assert torch.equal(params.crop, share_within_groups(first, 4).crop)  # the same stream, first rows kept
    assert torch.equal(whole.x_1, aug.apply(images, whole.params_1))
    share = augmenter.views(images, torch.Generator().manual_seed(5), rows=slice(4, 8), group_size=4)
    assert torch.equal(share.x_2, whole.x_2[4:8]) and torch.equal(share.params_1.crop, whole.params_1.crop[4:8])


def _trainer(tmp_path, tiny_config, data, **overrides) -> Trainer:
    return Trainer(tiny_config(tmp_path, **overrides), dataset=data)


def test_the_separate_pair_keeps_simclrs_views_and_draws_a_group_shared_pair_after_them(
        tmp_path, tiny_config, tiny_dataset):
    data = tiny_dataset()
    simclr = _trainer(tmp_path / "a", tiny_config, data, equimod=False)
    care = _trainer(tmp_path / "b", tiny_config, data, **CARE_RUN)  # care_pair "separate", the default
    assert care.cfg.care_pair == "separate" and care.objective.needs.grouped_pair
    assert simclr.objective.needs.group_size == 0 and care.objective.needs.group_size == 4
    images = data.images[simclr.batch_indices(0)[0]]
    generator = simclr._generator(0)
    old_1, old_2 = simclr.aug.sample_pair(16, (16, 16), generator)  # SimCLR's draws, then the same stream on
    next_3, next_4 = simclr.aug.sample_pair(16, (16, 16), generator)
    plain, batch = simclr.next_batch(0), care.next_batch(0)
    assert plain.x_3 is None and plain.t_3 is None and plain.params_4 is None
    for name in ("x_1", "x_2", "t_1", "t_2"):  # the base loss sees exactly SimCLR's views
        assert torch.equal(getattr(batch, name), getattr(plain, name))
    assert torch.equal(batch.params_1.crop, old_1.crop) and torch.equal(plain.x_1, simclr.aug.apply(images, old_1))
    for params, following, pixels, t in ((batch.params_3, next_3, batch.x_3, batch.t_3),
                                         (batch.params_4, next_4, batch.x_4, batch.t_4)):
        assert all(_same_rows(params, 4 * (i // 4), i) for i in range(16))  # one draw per group
        assert len({tuple(params.crop[i].tolist()) for i in range(0, 16, 4)}) == 4  # another per group
        assert torch.equal(params.crop, share_within_groups(following, 4).crop)
        assert torch.equal(pixels, care.aug.apply(images, params)) and torch.equal(t, care.aug.encode(params))
    assert not torch.equal(batch.params_3.crop, batch.params_4.crop)  # each view its own draw


def test_a_shared_care_batch_shares_parameters_within_groups_and_a_simclr_batch_keeps_its_old_pixels(
        tmp_path, tiny_config, tiny_dataset):
    data = tiny_dataset()
    simclr = _trainer(tmp_path / "a", tiny_config, data, equimod=False)
    care = _trainer(tmp_path / "b", tiny_config, data, care_pair="shared", **CARE_RUN)
    assert care.objective.needs.group_size == 4 and not care.objective.needs.grouped_pair
    images = data.images[simclr.batch_indices(0)[0]]
    old_1, old_2 = simclr.aug.sample_pair(16, (16, 16), simclr._generator(0))  # drawn the way it always was
    plain, grouped = simclr.next_batch(0), care.next_batch(0)
    assert torch.equal(plain.x_1, simclr.aug.apply(images, old_1))
    assert torch.equal(plain.x_2, simclr.aug.apply(images, old_2))
    assert torch.equal(plain.t_1, simclr.aug.encode(old_1))
    assert grouped.x_3 is None and grouped.x_4 is None
    for params, old, pixels in ((grouped.params_1, old_1, grouped.x_1), (grouped.params_2, old_2, grouped.x_2)):
        assert all(_same_rows(params, 4 * (i // 4), i) for i in range(16))  # one draw per group
        assert len({tuple(params.crop[i].tolist()) for i in range(0, 16, 4)}) == 4  # another per group
        assert torch.equal(params.crop, share_within_groups(old, 4).crop)  # the same stream as SimCLR's
        assert torch.equal(pixels, care.aug.apply(images, params))
    assert not torch.equal(grouped.params_1.crop, grouped.params_2.crop)  # each view its own draw
    assert torch.equal(grouped.t_1[0], grouped.t_1[3]) and not torch.equal(grouped.t_1[3], grouped.t_1[4])


def test_the_grouped_pair_on_the_cuda_path_is_laid_out_channels_last(tmp_path, tiny_config, tiny_dataset):
    trainer = _trainer(tmp_path, tiny_config, tiny_dataset(), channels_last=True, **CARE_RUN)
    trainer.augmenter = CudaAugment(trainer.aug, "cpu")  # what augmenter_for gives on a CUDA device
    seen, forward = [], trainer.objective.forward
    trainer.objective.forward = lambda model, batch: seen.append(batch) or forward(model, batch)
    metrics = trainer.train_step(0, trainer.next_batch(0))
    assert torch.isfinite(metrics["care"]) and metrics["care"] > 0
    batch = seen[0]
    assert all(getattr(batch, k).is_contiguous(memory_format=torch.channels_last) for k in ("x_1", "x_3", "x_4"))
    assert all(_same_rows(batch.params_3, 4 * (i // 4), i) for i in range(16))


def _reference(z_1, z_2, group_size):
    """The original's loss in float64: per group, off-diagonal cosines, 2 x mean over rows of the squared row norms."""
    losses = []
    for a, b in zip(z_1.double().split(group_size), z_2.double().split(group_size)):
        a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
        off = ~torch.eye(group_size, dtype=torch.bool)
        difference = ((a @ a.T)[off] - (b @ b.T)[off]).view(group_size, -1)
        losses.append(2 * difference.pow(2).sum(1).mean())
    return torch.stack(losses).mean()


def test_the_loss_by_hand_zero_for_rotations_and_a_float64_reference():
    e = torch.eye(2)
    # one group of 2: cosines 0 and 1 -> two off-diagonal differences of 1: 2/2 * 2 = 2; 0 and 1/sqrt(2) -> 1
    assert torch.allclose(care_loss(e, torch.tensor([[1.0, 0.0], [3.0, 0.0]]), 2), torch.tensor(2.0))
    assert torch.allclose(care_loss(e, torch.tensor([[1.0, 0.0], [1.0, 1.0]]), 2), torch.tensor(1.0))
    assert torch.allclose(care_loss(2 * e, e, 2), torch.tensor(0.0))  # lengths do not count: rows are normalised
    g = torch.Generator().manual_seed(0)
    z_1 = torch.randn(12, 5, generator=g)
    rotations = [torch.linalg.qr(torch.randn(5, 5, generator=g))[0] for _ in range(3)]  # one orthogonal map a group
    rotated = torch.cat([group @ q for group, q in zip(z_1.split(4), rotations)])
    assert care_loss(z_1, rotated, 4) < 1e-10
    assert care_loss(z_1, rotated, 6) > 0.1  # groups that did not share the map
    z_2 = torch.randn(12, 5, generator=g)
    loss = care_loss(z_1, z_2, 4)
    assert loss.shape == () and loss.dtype == torch.float32
    assert torch.allclose(loss.double(), _reference(z_1, z_2, 4), rtol=1e-5)
    low_1, low_2 = z_1.bfloat16(), z_2.bfloat16()
    assert torch.allclose(care_loss(low_1, low_2, 4), _reference(low_1, low_2, 4).float(), rtol=1e-4)  # float32 inside
    with pytest.raises(ValueError, match="group_size = 5"):
        care_loss(z_1, z_2, 5)


def test_the_objective_adds_the_weighted_care_loss_of_the_grouped_pairs_projections(
        tmp_path, tiny_config, tiny_dataset):
    trainer = _trainer(tmp_path, tiny_config, tiny_dataset(), care_weight=0.5, **CARE_RUN)
    objective, model, batch = trainer.objective, trainer.model, trainer.next_batch(0)
    out = objective(model, batch)
    losses = objective.losses(out, batch)
    with torch.no_grad():  # by hand, from the same weights: the base on x_1, x_2; z of x_3, x_4 in one forward
        plain = model(None, batch.x_1, batch.x_2)
        z_3, z_4 = model.projector(model.features(torch.cat([batch.x_3, batch.x_4]))).chunk(2)
    base = SelfSupervised.losses(objective, plain, batch)
    assert torch.allclose(out[0].z_1, plain.z_1) and torch.allclose(out[1], z_3) and torch.allclose(out[2], z_4)
    assert not torch.allclose(z_3, plain.z_1)  # not the base's views
    assert torch.allclose(losses["care"].double(), _reference(z_3, z_4, 4), rtol=1e-5)
    assert torch.allclose(losses["inv"], base["inv"])
    assert torch.allclose(losses["loss"], base["loss"] + 0.5 * losses["care"], rtol=1e-5)
    assert set(objective.checked) == {"loss", "inv", "equi", "care"} and objective.label == "simclr+care"


def test_shared_care_matches_the_gram_matrices_of_the_base_pair(tmp_path, tiny_config, tiny_dataset):
    trainer = _trainer(tmp_path, tiny_config, tiny_dataset(), care_weight=0.5, care_pair="shared", **CARE_RUN)
    objective, batch = trainer.objective, trainer.next_batch(0)
    out = objective(trainer.model, batch)
    losses = objective.losses(out, batch)
    base = SelfSupervised.losses(objective, out[0], batch)
    assert torch.allclose(losses["care"].double(), _reference(out[0].z_1, out[0].z_2, 4), rtol=1e-5)
    assert torch.allclose(losses["loss"], base["loss"] + 0.5 * losses["care"])


@pytest.mark.parametrize("overrides", [dict(equimod=True), dict(base="byol", equimod=False)])
def test_care_adds_its_term_to_any_base(tmp_path, tiny_config, tiny_dataset, overrides):
    trainer = _trainer(tmp_path, tiny_config, tiny_dataset(), **{**CARE_RUN, **overrides})
    batch = trainer.next_batch(0)
    losses = trainer.objective.losses(trainer.objective(trainer.model, batch), batch)
    assert all(torch.isfinite(losses[name]) for name in trainer.objective.checked)
    assert ("gain" in losses) == trainer.cfg.equimod and (batch.x_o is not None) == trainer.cfg.equimod
    assert trainer.objective.label == f"{trainer.cfg.base}{'+equimod' if trainer.cfg.equimod else ''}+care"


def test_a_short_run_adds_no_parameters_logs_a_finite_care_and_resumes_bit_exactly(tmp_path, tiny_config, tiny_dataset):
    data = tiny_dataset()
    plain = _trainer(tmp_path / "p", tiny_config, data, equimod=False)
    straight = _trainer(tmp_path / "a", tiny_config, data, **CARE_RUN)
    assert OBJECTIVES["care"] is CARE and type(straight.objective) is CARE
    assert set(straight.state()["heads"]) == set() and len(list(straight.objective.parameters())) == 0
    assert torch.equal(params_of(plain.model), params_of(straight.model))  # the same network, the same start
    straight.run()
    assert all("care" in record and torch.isfinite(torch.tensor(record["care"])) for record in straight.history)
    _trainer(tmp_path / "b", tiny_config, data, max_steps=3, **CARE_RUN).run()
    state = load_checkpoint(tmp_path / "b" / "run")
    assert state["step"] == 3 and state["objective"] == "care"
    resumed = Trainer(tiny_config(tmp_path / "b", **CARE_RUN), dataset=data, resume=True)
    resumed.run()
    assert resumed.step == straight.step == 8
    assert torch.equal(params_of(resumed.model), params_of(straight.model))
    with pytest.raises(ValueError, match="care_group_size"):
        Trainer(tiny_config(tmp_path / "b", **{**CARE_RUN, "care_group_size": 8}), dataset=data, resume=True)
    with pytest.raises(ValueError, match="care_pair"):  # the other pair's views: another run
        Trainer(tiny_config(tmp_path / "b", care_pair="shared", **CARE_RUN), dataset=data, resume=True)


def test_the_fields_are_validated_and_a_config_from_before_them_loads_unchanged():
    cfg = TrainConfig.preset("cpu-live", equimod=False)
    old = {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if not k.startswith("care")}
    loaded = TrainConfig.from_dict(old)  # a config.json written before CARE existed
    assert loaded == cfg and (loaded.care_weight, loaded.care_group_size, loaded.care_pair) == (0.03, 16, "separate")
    assert changed_settings(old, cfg) == []
    TrainConfig.preset("cpu-live", objective="care").validate()  # 64 = 4 groups of 16
    TrainConfig.preset("cpu-live", batch_size=60).validate()  # other objectives: any batch
    for field, value in [("care_group_size", 1), ("care_group_size", 0), ("care_group_size", True),
                         ("care_group_size", 4.0), ("care_weight", -1.0), ("care_weight", float("nan")),
                         ("care_pair", "both"), ("care_pair", None), ("batch_size", 60)]:
        with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
            TrainConfig.preset("cpu-live", objective="care", **{field: value}).validate()
    with pytest.raises(ValueError, match="multiple of care_group_size = 16"):
        TrainConfig.preset("cpu-live", objective="care", batch_size=40).validate()
    with pytest.raises(ValueError, match=r"care_pair.*one of \('separate', 'shared'\).*got 'both'"):
        TrainConfig.preset("cpu-live", objective="care", care_pair="both").validate()
    TrainConfig.preset("cpu-live", objective="care", care_pair="shared").validate()


def test_the_trainer_refuses_groups_it_cannot_draw(tmp_path, tiny_config, tiny_dataset):
    trainer = _trainer(tmp_path / "a", tiny_config, tiny_dataset(), **CARE_RUN)
    trainer.world = 8  # 2 images a process: a group of 4 would straddle two processes
    with pytest.raises(ValueError, match="whole groups of 4 images"):
        trainer._check_group_size(4)
    for c in ("a", "b"):  # streaming: workers crop each image on its own
        (tmp_path / "images" / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (20, 20), (60 * i, 40, 90)).save(tmp_path / "images" / c / f"{i}.png")
    with pytest.raises(ValueError, match="streaming workers crop each image"):
        Trainer(tiny_config(tmp_path / "b", dataset=f"folder:{tmp_path / 'images'}", stream=True, augment="cifar10",
                            batch_size=4, care_group_size=2, objective="care", equimod=False))


def test_the_compare_variants_are_simclr_plus_care_with_the_same_recipe():
    simclr, care, shared = (variant_config(name, 0, "cpu-live") for name in ("simclr", "care", "care-shared"))
    differ = {k for k, v in simclr.to_dict().items() if care.to_dict()[k] != v}
    assert differ == {"objective"} and care.objective == "care" and not care.equimod
    assert care.care_pair == "separate"  # the paper's design
    assert {k for k, v in care.to_dict().items() if shared.to_dict()[k] != v} == {"care_pair"}
    assert shared.care_pair == "shared"
    care.validate()
    shared.validate()


def test_the_train_command_lists_and_trains_the_care_objective(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "care" in " ".join(capsys.readouterr().out.split())
    out = tmp_path / "run"
    code = cli.main(["train", "--preset", "cpu-live", "--objective", "care", "--no-equimod", "--max-steps", "2",
                     "--train-subset", "64", "--batch-size", "16", "--augment-overrides", "size=16",
                     "--proj-hidden", "32", "--care-group-size", "8", "--care-weight", "0.1", "--care-pair", "shared",
                     "--log-every", "1", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    state = load_checkpoint(out)
    assert state["objective"] == "care"
    assert (state["config"]["care_group_size"], state["config"]["care_weight"]) == (8, 0.1)
    assert state["config"]["care_pair"] == "shared"
    assert all(torch.isfinite(torch.tensor(record["care"])) for record in state["metrics"])
