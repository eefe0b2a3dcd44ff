"""The streaming path: decode + crop per image in DataLoader workers, the rest on the device."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from equimod_edu.augment import AugmentationConfig, AugmentationParams, apply
from equimod_edu.checkpoint import load_checkpoint
from equimod_edu.config import TrainConfig
from equimod_edu.loader import FolderCrops, views_from_crops
from equimod_edu.train import Trainer


@pytest.fixture()
def folder(tmp_path) -> Path:
    """Two classes of smooth colour images of different sizes, as an ImageFolder."""
    g = torch.Generator().manual_seed(0)
    sizes = [(40, 56), (64, 48), (50, 50), (37, 61)]
    for c in ("cats", "dogs"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes * 2):
            base = torch.rand(3, 1, 1, generator=g)
            ramp = torch.linspace(0, 1, w).view(1, 1, w) * torch.linspace(0, 1, h).view(1, h, 1)
            image = ((0.3 * base + 0.7 * ramp * torch.rand(3, 1, 1, generator=g)) * 255).to(torch.uint8)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "train" / c / f"{i}.png")
    return tmp_path


def test_items_hold_the_original_two_crops_and_their_boxes(folder):
    aug = AugmentationConfig.cifar10(size=16)
    ds = FolderCrops(folder / "train", aug, seed=0)
    assert len(ds) == 16 and ds.classes == ["cats", "dogs"]
    images, crops, label = ds[3]
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.uint8
    assert crops.shape == (2, 4) and label == 0
    top, left, h, w = crops.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 1 + 1e-6).all() and (left + w <= 1 + 1e-6).all()
    assert (h * w >= 0.2 * 0.75).all()
    # the same (seed, epoch, index) gives the same crops; another epoch other crops
    assert torch.equal(ds[3][1], crops) and torch.equal(ds[3][0], images)
    ds.set_epoch(1)
    assert not torch.equal(ds[3][1], crops)


def test_a_full_image_box_gives_the_resized_image(folder):
    aug = AugmentationConfig.cifar10(size=50, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    ds = FolderCrops(folder / "train", aug)
    images, crops, _ = ds[2]  # the 50x50 image: the full box, no resizing
    assert torch.allclose(crops, torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2))
    assert torch.equal(images[1], images[0]) and torch.equal(images[2], images[0])


def test_device_side_views_keep_the_real_crop_parameters(folder):
    aug = AugmentationConfig.cifar10(size=16)
    ds = FolderCrops(folder / "train", aug)
    batch = [ds[i] for i in range(4)]
    images = torch.stack([b[0] for b in batch])
    crops = torch.stack([b[1] for b in batch])
    g = torch.Generator().manual_seed(0)
    x_o, x_1, x_2, p_1, p_2 = views_from_crops(images, crops, aug, g, "cpu")
    assert x_o.shape == x_1.shape == x_2.shape == (4, 3, 16, 16)
    assert torch.equal(p_1.crop, crops[:, 0]) and torch.equal(p_2.crop, crops[:, 1])
    replay = p_1.clone()
    replay.crop = AugmentationParams.identity(4).crop
    assert torch.equal(apply(images[:, 1], replay, aug), x_1)  # the rest of the pipeline, on the device
    assert torch.allclose(x_o, aug.normalize(images[:, 0]))


@pytest.mark.parametrize("workers", [0, 2])
def test_training_streams_a_folder_and_resumes(folder, tmp_path, workers):
    cfg = TrainConfig(dataset=f"folder:{folder}", augment="cifar10", augment_overrides={"size": 16},
                      backbone="convnet", proj_hidden=32, z_dim=16, y_dim=16, param_embed_dim=8, batch_size=4,
                      epochs=2, warmup_epochs=1, optimizer="adamw", lr=1e-3, device="cpu", num_workers=workers,
                      log_every=1, checkpoint_every=2, out_dir=str(tmp_path / "run"), progress=False, max_steps=5)
    trainer = Trainer(cfg)
    assert trainer.streaming and trainer.steps_per_epoch == 4
    trainer.run()
    assert load_checkpoint(cfg.out_dir)["step"] == 5
    resumed = Trainer(TrainConfig(**{**cfg.to_dict(), "max_steps": None}), resume=True)
    resumed.run()
    assert resumed.step == 8
