"""Datasets too large for the device (ImageNet, big image folders): crop per image, the rest batched.

Small sets live whole on the device and `augment.apply` does everything there. A folder of
full-size photos cannot: each image must be decoded from disk anyway, so the DataLoader workers
do the two things that need the full image, decode and crop (RandomResizedCrop's box, drawn with
`augment.sample_crop`, cut and resized with PIL), and return the crop boxes with the small views.
Flip, colour jitter, grayscale, blur and solarize then run batched on the device as usual, and
the predictor sees the true crop parameters.

    dataset = FolderCrops("data/imagenet/train", AugmentationConfig.imagenet())
    images, crops, labels = dataset[0]   # (3, 3, S, S) uint8 [x_o, view 1, view 2], (2, 4) boxes
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from .augment import AugmentationConfig, AugmentationParams, Views, sample_crop
from .data import check_no_link_loops, open_rgb
from .dataset import mix_seed


class FolderCrops(Dataset):
    """An ImageFolder that returns, per image, x_o and two random resized crops as uint8 tensors.

    Item i: images (3, 3, S, S) uint8 = [original (shorter side resized to S / aug.original_crop, centre crop S),
    view 1 crop, view 2 crop], crops (2, 4) float (top, left, height, width fractions of the full
    image), label int. Crop boxes come from a generator seeded by (seed, epoch, i), so a run is
    reproducible whatever the number of workers; call `set_epoch` once per epoch.
    """

    def __init__(self, root, aug: AugmentationConfig, seed: int = 0):
        from torchvision.datasets import ImageFolder

        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        check_no_link_loops(root)
        try:
            self.folder = ImageFolder(str(root))
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{root}: expected class sub-folders holding images ({error})") from None
        self.aug, self.seed, self.epoch = aug, seed, 0
        self.classes = list(self.folder.classes)

    def __len__(self) -> int:
        return len(self.folder.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int):
        from PIL import Image
        from torchvision.transforms.v2 import functional as TF

        path, label = self.folder.samples[index]
        image = open_rgb(path)  # a damaged file: a ValueError naming it
        width, height = image.size
        size = self.aug.size
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index))
        crops = sample_crop(2, (height, width), self.aug.crop_scale, self.aug.crop_ratio, g)
        resample = Image.BICUBIC if self.aug.interpolation == "bicubic" else Image.BILINEAR
        views = []
        for top, left, h, w in crops.tolist():
            box = (left * width, top * height, (left + w) * width, (top + h) * height)
            views.append(TF.pil_to_tensor(image.resize((size, size), resample, box=box)))
        resize = round(size / self.aug.original_crop)  # Resize(256) + CenterCrop(224) on ImageNet
        original = TF.center_crop(TF.resize(TF.pil_to_tensor(image), resize, antialias=True), [size, size])
        return torch.stack([original, *views]), crops, label


def views_from_crops(images: torch.Tensor, crops: torch.Tensor, aug: AugmentationConfig, generator,
                     device, augmenter=None) -> Views:
    """Finish a batch of FolderCrops on the device: the Views x_o, x_1, x_2 and their full parameters.

    images (N, 3, 3, S, S) uint8, crops (N, 2, 4). The other parameters are drawn on the device;
    `apply` runs with a full-image box (the views are already cropped) while the returned params
    hold the real boxes, which is what encode() must see. `augmenter` normalises and applies
    (``augment_cuda.augmenter_for(aug, device)``; default: aug itself).
    """
    augmenter = augmenter or aug
    images, crops = images.to(device, non_blocking=True), crops.to(device, non_blocking=True)
    n = images.shape[0]
    x_o = augmenter.normalize(images[:, 0])
    views, params = [], []
    for k, p in enumerate(aug.sample_pair(n, (aug.size, aug.size), generator, device)):
        already_cropped = p.clone()
        already_cropped.crop = AugmentationParams.identity(n, device).crop
        views.append(augmenter.apply(images[:, k + 1], already_cropped))
        p.crop = crops[:, k]
        params.append(p)
    return Views(x_o, views[0], views[1], params[0], params[1])
