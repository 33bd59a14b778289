"""The splits and transforms each downstream task trains and tests on, by dataset format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torchvision.transforms as T
from timm.data import create_transform
from timm.data.random_erasing import RandomErasing

from cgdmae.data import (
    DatasetFormatError,
    ImageDataset,
    read_image_folder,
    read_market1501,
    read_segmentation,
    read_vehicleid,
    read_veri776,
    read_veriwild,
)
from cgdmae.data.datasets import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class TaskData:
    """What a task trains on and tests on. ``test`` maps a protocol name to its test data."""

    train: list[Any]
    test: dict[str, list[Any]]
    num_classes: dict[str, int] = field(default_factory=dict)

    @property
    def num_test(self) -> int:
        def count(data: Any) -> int:
            return sum(map(len, data)) if isinstance(data, tuple) else len(data)

        return sum(count(v) for v in self.test.values())


INTERPOLATIONS = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
}


def train_transform(
    size: tuple[int, int], pad: int, erasing: float, erasing_fill: str = "zero"
) -> T.Compose:
    """BoT/TransReID augmentation: resize, flip, pad + random crop, random erasing.

    ``erasing_fill``: ``zero`` fills the erased box with 0 (the mean, after normalising);
    ``noise`` with standard-normal noise per pixel, as TransReID (timm's ``RandomErasing`` in
    ``mode='pixel'``, one box).
    """
    steps: list[Any] = [
        T.Resize(list(size), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.Pad(pad),
        T.RandomCrop(list(size)),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
    if erasing > 0 and erasing_fill == "noise":
        steps.append(RandomErasing(probability=erasing, mode="pixel", max_count=1, device="cpu"))
    elif erasing > 0:
        steps.append(T.RandomErasing(p=erasing, value=0))
    return T.Compose(steps)


def rand_augment_transform(size: tuple[int, int], policy: str, erasing: float) -> Any:
    """MAE's fine-tuning augmentation (``util/datasets.py``), from timm's ``create_transform``:
    random resized crop (bicubic), flip, RandAugment ``policy`` (e.g. ``rand-m9-mstd0.5-inc1``)
    and random erasing with per-pixel noise."""
    return create_transform(
        (3, *size),
        is_training=True,
        color_jitter=None,
        auto_augment=policy,
        interpolation="bicubic",
        re_prob=erasing,
        re_mode="pixel",
        re_count=1,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def test_transform(
    size: tuple[int, int], interpolation: str = "bicubic", crop_pct: float | None = None
) -> T.Compose:
    """Resize to ``size`` (TransReID tests with torchvision's default, bilinear) and normalise.

    With ``crop_pct`` (MAE: 0.875), resize the shorter side to ``size / crop_pct`` (224 → 256)
    and take the central ``size`` crop.
    """
    if crop_pct is None:
        resize = [T.Resize(list(size), interpolation=INTERPOLATIONS[interpolation])]
    else:
        short = int(min(size) / crop_pct)
        resize = [
            T.Resize(short, interpolation=INTERPOLATIONS[interpolation]),
            T.CenterCrop(list(size)),
        ]
    return T.Compose([*resize, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _vehicleid_sizes(root: Path) -> list[int]:
    split_dir = root / "train_test_split"
    sizes = sorted(int(p.stem.rsplit("_", 1)[1]) for p in split_dir.glob("test_list_*.txt"))
    if not sizes:
        raise DatasetFormatError("has no test_list_<N>.txt test split", split_dir)
    return sizes


def _veriwild_sizes(root: Path) -> list[int]:
    split_dir = root / "train_test_split"
    sizes = sorted(
        int(p.stem.split("_")[1]) for p in split_dir.glob("test_*.txt") if "query" not in p.stem
    )
    if not sizes:
        raise DatasetFormatError("has no test_<N>.txt test split", split_dir)
    return sizes


def reid_data(fmt: str, root: str | Path) -> TaskData:
    """Train records (labels 0..n-1, from the readers); one test protocol per split the dataset defines.

    Each protocol is ``(query, gallery)``; VehicleID's protocol draws its own query/gallery
    split from the test list, so it gets ``([], test_records)``.
    """
    root = Path(root)
    if fmt == "vehicleid":
        sizes = _vehicleid_sizes(root)
        test = {f"test{size}": ([], read_vehicleid(root, size)[1]) for size in sizes}
        train = read_vehicleid(root, sizes[0])[0]
    elif fmt == "veriwild":
        splits = {size: read_veriwild(root, size) for size in _veriwild_sizes(root)}
        train = next(iter(splits.values())).train
        test = {f"test{size}": (s.query, s.gallery) for size, s in splits.items()}
    else:
        splits = read_veri776(root) if fmt == "veri776" else read_market1501(root)
        train = splits.train
        test = {"test": (splits.query, splits.gallery)}
    return TaskData(train, test, {"ids": len({r.label for r in train})})


def var_data(root: str | Path) -> TaskData:
    """VeRi-776's colour and type labels: train on image_train, test on image_test."""
    splits = read_veri776(root)
    colors = len(splits.color_names) or 1 + max(r.color for r in splits.train)
    types = len(splits.type_names) or 1 + max(r.type for r in splits.train)
    test = [r for r in splits.gallery if r.color >= 0 and r.type >= 0]
    return TaskData(splits.train, {"test": test}, {"color": colors, "type": types})


def vfr_data(root: str | Path) -> TaskData:
    train, test = read_image_folder(root, "train"), read_image_folder(root, "test")
    if train.classes != test.classes:
        raise DatasetFormatError(
            f"train has classes {train.classes[:5]}..., test {test.classes[:5]}...", root
        )
    return TaskData(train.records, {"test": test.records}, {"classes": len(train.classes)})


def vps_data(root: str | Path, num_classes: int | None) -> TaskData:
    train = read_segmentation(root, "train", num_classes)
    val = read_segmentation(root, "val", num_classes)
    return TaskData(train.records, {"val": val.records}, {"classes": len(train.classes)})


def image_train_set(
    records: list[Any], size: tuple[int, int], spec: dict[str, Any], rand_augment: bool
) -> ImageDataset:
    """Training images: MAE's RandAugment recipe when the task allows it (``rand_augment``)
    and the config sets a policy, else flip, pad + crop and erasing."""
    if rand_augment and spec.get("rand_augment"):
        transform = rand_augment_transform(size, spec["rand_augment"], spec["erasing"])
    else:
        fill = spec.get("erasing_fill", "zero")
        transform = train_transform(size, spec["pad"], spec["erasing"], fill)
    return ImageDataset(records, transform)


def image_test_set(records: list[Any], size: tuple[int, int], spec: dict[str, Any]) -> ImageDataset:
    """Test images, resized (and centre-cropped with ``test_crop_pct``) as the config says."""
    interpolation = spec.get("test_interpolation", "bicubic")
    transform = test_transform(size, interpolation, spec.get("test_crop_pct"))
    return ImageDataset(records, transform)
