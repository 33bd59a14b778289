"""Torch Datasets, the joint segmentation transform, the P×K sampler, and error transport."""

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cgdmae.data import (
    ClassRecord,
    DatasetFormatError,
    ImageDataset,
    RandomIdentitySampler,
    ReidRecord,
    SegmentationDataset,
    SegmentationTransform,
    SegRecord,
    load_rgb,
)

MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def test_image_dataset_returns_tensor_and_record_ints(tmp_path):
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[:, :3] = (255, 0, 0)
    path = save(tmp_path / "0001_c002_00016450_0.png", pixels)  # lossless, to check values
    record = ReidRecord(path, pid=1, camid=1, label=0, frame=16450, color=4, type=1)
    item = ImageDataset([record])[0]
    assert item["image"].shape == (3, 4, 6) and item["image"].dtype == torch.float32
    assert torch.equal(item["image"][0, :, :3], torch.ones(4, 3))
    assert torch.equal(item["image"][0, :, 3:], torch.zeros(4, 3))
    expected = {"pid": 1, "camid": 1, "label": 0, "frame": 16450, "color": 4, "type": 1}
    assert {k: item[k] for k in expected} == expected and item["model"] == -1
    classified = ImageDataset([ClassRecord(path, 7)], transform=lambda im: im.size)[0]
    assert classified["image"] == (6, 4) and classified["label"] == 7
    assert set(classified) == {"image", "label", "index"}


def test_load_rgb_names_missing_and_corrupt_files(tmp_path):
    good = save(tmp_path / "a.jpg", np.full((8, 8, 3), 90))
    bad = tmp_path / "b.jpg"
    bad.write_bytes(good.read_bytes()[:60])
    assert load_rgb(save(tmp_path / "gray.png", np.zeros((3, 3)))).mode == "RGB"
    with pytest.raises(DatasetFormatError, match="corrupt or truncated image") as err:
        load_rgb(bad)
    assert err.value.path == bad and str(err.value).startswith(f"{bad}: ")
    with pytest.raises(DatasetFormatError, match="does not exist") as err:
        ImageDataset([ClassRecord(tmp_path / "gone.jpg", 0)])[0]
    assert err.value.path == tmp_path / "gone.jpg"


def test_error_keeps_path_and_line_across_pickling_and_workers(tmp_path):
    error = pickle.loads(pickle.dumps(DatasetFormatError("bad line", tmp_path / "x.txt", 3)))
    assert (error.path, error.line, str(error)) == (
        tmp_path / "x.txt",
        3,
        f"{tmp_path}/x.txt:3: bad line",
    )
    bad = tmp_path / "0001.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    loader = DataLoader(ImageDataset([ClassRecord(bad, 0)]), num_workers=1)
    with pytest.raises(DatasetFormatError, match=str(bad)):
        next(iter(loader))


def seg_pair(tmp_path: Path, mask_shape=(8, 12)) -> SegRecord:
    """An image red on the left, blue on the right; its mask 1 on the left, 2 on the right."""
    pixels = np.zeros((8, 12, 3), np.uint8)
    pixels[:, :6] = (255, 0, 0)
    pixels[:, 6:] = (0, 0, 255)
    mask = np.ones(mask_shape, np.uint8)
    mask[:, mask_shape[1] // 2 :] = 2
    mask[:2, :2] = 255
    return SegRecord(save(tmp_path / "000001.png", pixels), save(tmp_path / "000001_m.png", mask))


def test_segmentation_dataset_default_tensors(tmp_path):
    item = SegmentationDataset([seg_pair(tmp_path)])[0]
    assert item["image"].shape == (3, 8, 12) and item["mask"].dtype == torch.int64
    assert item["mask"].shape == (8, 12) and item["mask"][0, 0] == 255
    assert set(item["mask"].unique().tolist()) == {1, 2, 255}


def test_segmentation_dataset_names_both_files_when_sizes_differ(tmp_path):
    record = seg_pair(tmp_path, mask_shape=(8, 10))
    with pytest.raises(DatasetFormatError) as err:
        SegmentationDataset([record])[0]
    message = str(err.value)
    assert err.value.path == record.mask and str(record.image) in message
    assert "mask size (10, 8) (w, h)" in message and "of size (12, 8)" in message


def test_segmentation_transform_moves_image_and_mask_together(tmp_path):
    record = seg_pair(tmp_path)
    torch.manual_seed(0)
    dataset = SegmentationDataset([record], SegmentationTransform((16, 16), train=True))
    columns = torch.arange(16).expand(16, 16)
    orientations = []
    for _ in range(20):
        item = dataset[0]
        image, mask = item["image"], item["mask"]
        assert image.shape == (3, 16, 16) and mask.shape == (16, 16)
        assert set(mask.unique().tolist()) <= {1, 2, 255}  # nearest: no blended ids
        red = (image[0] > 1.5) & (image[2] < -1.0)  # mostly red after normalisation
        blue = (image[2] > 1.5) & (image[0] < -1.0)
        assert (mask[red] != 2).all() and (mask[blue] != 1).all()
        if (mask == 1).any() and (mask == 2).any():
            orientations.append(
                bool(columns[mask == 1].float().mean() < columns[mask == 2].float().mean())
            )
    assert len(set(orientations)) == 2  # some draws flipped, some did not
    item = SegmentationDataset([record], SegmentationTransform((4, 6), train=False))[0]
    assert item["mask"].tolist() == [[255, 1, 1, 2, 2, 2]] + [[1, 1, 1, 2, 2, 2]] * 3
    assert torch.allclose(item["image"][:, 0, 0], (torch.tensor([1.0, 0, 0]) - MEAN) / STD)


def test_segmentation_pad_and_erasing_leave_no_label_without_image(tmp_path):
    """Padding (black) and the erased box (0 after normalising) are 255, ignored, in the
    mask; every labelled pixel still shows red, blue or a blend of the two."""
    record = seg_pair(tmp_path)
    torch.manual_seed(0)
    augment = SegmentationTransform((16, 16), train=True, pad=6, erasing=1.0)
    dataset = SegmentationDataset([record], augment)
    for _ in range(20):
        item = dataset[0]
        image, mask = item["image"], item["mask"]
        red = (image[0] > 1.5) & (image[2] < -1.0)
        blue = (image[2] > 1.5) & (image[0] < -1.0)
        assert (mask[red] != 2).all() and (mask[blue] != 1).all()
        labelled = (mask == 1) | (mask == 2)
        green_off = image[1] < -2.0  # red, blue and their blends; erased pixels are 0
        not_black = torch.maximum(image[0], image[2]) > -1.5
        assert (green_off & not_black)[labelled].all()
        assert (mask == 255).sum() > 4  # some padding or erasing in every draw
    plain = SegmentationTransform((16, 16), train=True)
    assert plain.pad == 0 and plain.erasing == 0.0


def test_pk_sampler_batches_p_ids_of_k_images():
    pids = [0] * 5 + [1] * 4 + [2] * 2 + [3] * 6 + [4] * 1
    p, k = 2, 3
    sampler = RandomIdentitySampler(pids, p=p, k=k, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) and len(order) % (p * k) == 0 and order
    for start in range(0, len(order), p * k):
        batch = [pids[i] for i in order[start : start + p * k]]
        groups = [batch[j : j + k] for j in range(0, p * k, k)]
        assert all(len(set(g)) == 1 for g in groups) and len({g[0] for g in groups}) == p
    counts = Counter(order)
    rich = [i for i, pid in enumerate(pids) if pid in (0, 1, 3)]
    assert all(counts[i] <= 1 for i in rich)  # ids with >= K images: no repeats in an epoch
    again = RandomIdentitySampler(pids, p=p, k=k, seed=0)
    assert list(again) == order  # a pure function of (seed, epoch)
    orders = set()
    for epoch in range(4):
        sampler.set_epoch(epoch)
        orders.add(tuple(sampler))
    assert len(orders) > 1
    sampler.set_epoch(0)
    assert list(sampler) == order


def test_pk_sampler_draws_small_ids_with_replacement():
    pids = [7, 8, 8, 8, 8]
    order = list(RandomIdentitySampler(pids, p=2, k=4, seed=1))
    assert sorted(order) == [0, 0, 0, 0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="at least P=3 identities, the data has 2"):
        RandomIdentitySampler(pids, p=3, k=2)
