"""data.decoded_cache_mb: each image decodes once per process, within the budget, and what
training sees does not change; ``prepare_job`` sets it and the job's threads."""

import numpy as np
import pytest
import torch
from PIL import Image

from cgdmae.data import DatasetFormatError, datasets, load_rgb
from cgdmae.pretrain.data import PretrainDataset


@pytest.fixture
def images(tmp_path, monkeypatch):
    """Three 20×10 JPEGs, and an empty cache for this test."""
    monkeypatch.setattr(datasets, "_DECODED", datasets._DecodedImages())
    rng = np.random.default_rng(0)
    paths = []
    for k in range(3):
        path = tmp_path / f"{k}.jpg"
        Image.fromarray(rng.integers(0, 255, (10, 20, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_images_within_the_budget_are_decoded_once(images, monkeypatch):
    monkeypatch.setenv(datasets.DECODED_CACHE_ENV, str(2 * 20 * 10 * 3 / 2**20))  # two images
    first = [np.asarray(load_rgb(p)) for p in images]
    for path in images:
        path.unlink()
    assert np.array_equal(np.asarray(load_rgb(images[0])), first[0])
    assert np.array_equal(np.asarray(load_rgb(images[1])), first[1])
    with pytest.raises(DatasetFormatError, match="does not exist"):
        load_rgb(images[2])  # over the budget: read from disk, which it no longer is on


def test_no_budget_keeps_nothing(images, monkeypatch):
    monkeypatch.delenv(datasets.DECODED_CACHE_ENV, raising=False)
    load_rgb(images[0])
    images[0].unlink()
    with pytest.raises(DatasetFormatError, match="does not exist"):
        load_rgb(images[0])


def test_a_caller_changing_its_image_does_not_change_the_cache(images, monkeypatch):
    monkeypatch.setenv(datasets.DECODED_CACHE_ENV, "1")
    original = np.asarray(load_rgb(images[0])).copy()
    load_rgb(images[0]).paste((255, 0, 0), (0, 0, 20, 10))
    assert np.array_equal(np.asarray(load_rgb(images[0])), original)


def test_pretraining_views_are_the_same_with_the_cache(images, monkeypatch):
    def views() -> torch.Tensor:
        data = PretrainDataset(images, (8, 8), seed=3)
        data.set_epoch(1)
        return torch.stack([data[i]["image"] for i in range(len(data))])

    monkeypatch.delenv(datasets.DECODED_CACHE_ENV, raising=False)
    uncached = views()
    monkeypatch.setenv(datasets.DECODED_CACHE_ENV, "1")
    assert torch.equal(views(), uncached)
    assert torch.equal(views(), uncached)  # from memory now
    assert len(datasets._DECODED.images) == len(images)


def test_a_local_cpu_job_holds_to_its_threads_and_a_slurm_job_to_its_allocation(monkeypatch):
    from cgdmae.workflow import prepare_job

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("SLURM_JOB_ID", "42")
        torch.set_num_threads(2)
        prepare_job(1, 16)
        assert torch.get_num_threads() == 2  # the node's allocation bounds it, not the rule
        assert datasets.os.environ[datasets.DECODED_CACHE_ENV] == "16"
        monkeypatch.delenv("SLURM_JOB_ID")
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # restored after the test
        prepare_job(1, 0)
        assert torch.get_num_threads() == 1
        assert datasets.os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
        monkeypatch.delenv(datasets.DECODED_CACHE_ENV, raising=False)
