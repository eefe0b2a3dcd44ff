"""TrainConfig (config.py): the fields it hands to the model, the papers' presets, bad values named."""

import dataclasses

import pytest

from equimod_edu.config import TrainConfig
from equimod_edu.models import ModelConfig
from equimod_edu.train import Trainer

#: The ModelConfig fields with no TrainConfig twin: TrainConfig.model_config derives them from the
#: augmentation (P, the length of t, and the mask of the entries of t the predictor sees).
DERIVED_FROM_THE_AUGMENTATION = {"param_dim": "aug.encoded_dim", "param_mask": "aug.param_mask(param_groups)"}

#: A value other than ModelConfig's default for every field the two configs share.
CHANGED = dict(backbone="resnet18", base="byol", equimod=False, z_dim=48, proj_hidden=40, y_dim=24, param_embed_dim=8,
               equi_projector=False, param_encoder=False, predictor_depth=1, predictor_hidden=20, byol_hidden=36,
               ema_base=0.99)


def test_every_model_config_field_has_a_train_config_twin_or_is_derived():
    """A new ModelConfig field without a TrainConfig field of the same name would silently keep its default."""
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    orphans = model_fields - train_fields - set(DERIVED_FROM_THE_AUGMENTATION)
    assert not orphans, f"ModelConfig fields no TrainConfig field sets: {sorted(orphans)}"
    assert set(DERIVED_FROM_THE_AUGMENTATION) <= model_fields and not set(DERIVED_FROM_THE_AUGMENTATION) & train_fields


def test_model_config_passes_every_shared_field_and_derives_the_rest():
    shared = {f.name for f in dataclasses.fields(ModelConfig)} - set(DERIVED_FROM_THE_AUGMENTATION)
    assert set(CHANGED) == shared, "give each shared field a non-default value in CHANGED"
    defaults = ModelConfig()
    assert all(getattr(defaults, name) != value for name, value in CHANGED.items())
    cfg = TrainConfig(**CHANGED, param_groups=("hue",))
    model_config, aug = cfg.model_config(), cfg.augmentation()
    assert {name: getattr(model_config, name) for name in CHANGED} == CHANGED
    assert model_config.param_dim == aug.encoded_dim
    assert model_config.param_mask == aug.param_mask(("hue",)) and not all(model_config.param_mask)


def test_presets_hold_the_papers_hyperparameters():
    c = TrainConfig.preset("cifar10-simclr")
    assert (c.batch_size, c.epochs, c.warmup_epochs, c.lr, c.weight_decay, c.momentum) == (512, 800, 10, 4.0, 1e-6, 0.9)
    assert (c.temperature_inv, c.temperature_equi, c.z_dim, c.y_dim, c.param_embed_dim) == (0.5, 0.2, 128, 128, 128)
    assert c.backbone == "resnet18" and c.optimizer == "lars" and c.trust_coefficient == 1e-3
    b = TrainConfig.preset("cifar10-byol")
    assert (b.base, b.lr, b.z_dim, b.ema_base, b.augment) == ("byol", 2.0, 256, 0.996, "byol_cifar10")
    assert b.model_config().z_dim == 256  # BYOL's projection: z_dim is its one setting
    with pytest.raises(ValueError, match="byol_z_dim is now z_dim: .* set z_dim to the byol_z_dim value"):
        TrainConfig.from_dict({**b.to_dict(), "z_dim": 128, "byol_z_dim": 256})  # a file from before the rename
    i, j = TrainConfig.preset("imagenet-simclr"), TrainConfig.preset("imagenet-byol")
    assert (i.temperature_inv, j.weight_decay) == (0.2, 1.5e-6)  # the official ImageNet runs
    assert TrainConfig.preset("imagenet-simclr").lr == 2.4 and TrainConfig.preset("imagenet-byol").lr == 4.8
    with pytest.raises(ValueError, match="unknown preset"):
        TrainConfig.preset("mnist")


def test_bad_augmentation_and_model_fields_are_named(tmp_path, tiny_config, tiny_dataset):
    with pytest.raises(ValueError, match="hue"):
        tiny_config(tmp_path, augment_overrides={"hue": 0.9}).validate()
    with pytest.raises(ValueError, match="backbone"):
        tiny_config(tmp_path, backbone="vgg").validate()
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(tiny_config(tmp_path, batch_size=128), dataset=tiny_dataset(64))


def test_param_groups_become_the_models_mask(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, param_groups=("crop", "flip"))
    mask = cfg.model_config().param_mask
    assert mask == (True,) * 5 + (False,) * 10


def test_presets_of_the_cpu_recipe_and_the_old_name_says_the_new_one():
    live, reference = TrainConfig.preset("cpu-live"), TrainConfig.preset("cpu-reference")
    assert (live.batch_size, live.epochs, live.train_subset, live.optimizer) == (64, 6, 8000, "adamw")
    assert reference.train_subset == live.train_subset and reference.epochs == 2 * live.epochs  # 2x the compute
    with pytest.raises(ValueError, match="'cpu-demo' is now called 'cpu-live'"):
        TrainConfig.preset("cpu-demo")
    assert live.augmentation().hue == 0.5  # the synthetic preset's hue jitter covers the colour circle
