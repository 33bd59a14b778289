"""Curation: the balanced sampler's guarantees, k-means on blobs, dedup, subsets, resume."""

import numpy as np
import pytest
import torch

from cgdmae.curation.dedup import duplicate_pairs, near_duplicates
from cgdmae.curation.embed import embed_images
from cgdmae.curation.kmeans import hierarchical_kmeans, kmeans
from cgdmae.curation.sampling import balanced_targets, hierarchical_sample, random_sample
from cgdmae.curation.subsets import attribute_entropy, curate, parse_subset
from cgdmae.data.records import PoolRecord

RNG = np.random.default_rng(0)


def blobs(sizes, dim=8, spread=0.05, seed=0, scale=5.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim)) * scale
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return (centres[labels] + rng.normal(size=(len(labels), dim)) * spread).astype(
        np.float32
    ), labels


@pytest.mark.parametrize("target", [0, 1, 7, 50, 99, 100, 1000])
def test_balanced_targets_sum_exactly_and_respect_the_cap(target):
    sizes = np.array([1, 3, 5, 10, 30, 51])
    counts = balanced_targets(sizes, target, np.random.default_rng(1))
    assert counts.sum() == min(target, sizes.sum())
    assert (counts <= sizes).all()
    cap = counts.min(where=counts < sizes, initial=counts.max())  # the clusters left unfilled
    assert counts.max() <= cap + 1  # only the remainder adds one above the cap


def test_balanced_targets_are_deterministic_for_a_seed():
    sizes = np.array([4, 9, 9, 9, 20])
    a = balanced_targets(sizes, 13, np.random.default_rng(5))
    assert (a == balanced_targets(sizes, 13, np.random.default_rng(5))).all()


def test_kmeans_recovers_blobs_and_backends_agree():
    x, labels = blobs([40, 60, 80, 100])
    for backend in ("faiss", "torch"):
        _, assign = kmeans(torch.from_numpy(x), 4, n_iter=10, resampling_steps=2, sample_size=10,
                           backend=backend)  # fmt: skip
        assign = assign.numpy()
        for blob in range(4):  # each blob is one cluster
            assert len(np.unique(assign[labels == blob])) == 1
        assert len(np.unique(assign)) == 4


def test_hierarchical_kmeans_levels_nest_and_are_deterministic():
    x, _ = blobs([30] * 12)
    h = hierarchical_kmeans(x, [12, 3], sample_sizes=[5, 2], n_iter=10, resampling_steps=2)
    again = hierarchical_kmeans(x, [12, 3], sample_sizes=[5, 2], n_iter=10, resampling_steps=2)
    assert all((a == b).all() for a, b in zip(h.assignments, again.assignments, strict=True))
    for fine in range(12):  # a level-0 cluster sits in exactly one level-1 cluster
        assert len(np.unique(h.assignments[1][h.assignments[0] == fine])) == 1
    with pytest.raises(ValueError, match=r"levels\[1\] = 20 clusters.*only 12 points"):
        hierarchical_kmeans(x, [12, 20], sample_sizes=[5, 2], n_iter=2, resampling_steps=0)


@pytest.mark.parametrize("strategy", ["r", "c"])
def test_sampler_total_edges_and_determinism(strategy):
    x, _ = blobs([5, 10, 40, 200])
    h = hierarchical_kmeans(x, [4], sample_sizes=[5], n_iter=10, resampling_steps=1)
    for target in (0, 1, 37, len(x), len(x) + 10):
        chosen = hierarchical_sample(h, x, target, strategy=strategy, seed=2)
        assert len(chosen) == min(target, len(x)) and len(np.unique(chosen)) == len(chosen)
    a = hierarchical_sample(h, x, 37, strategy=strategy, seed=3)
    assert (a == hierarchical_sample(h, x, 37, strategy=strategy, seed=3)).all()
    sizes = np.bincount(h.assignments[0][a], minlength=4)
    assert sorted(sizes) == [5, 10, 11, 11]  # small clusters whole, the rest capped evenly
    single = hierarchical_kmeans(x[:50], [1], sample_sizes=[5], n_iter=2, resampling_steps=0)
    assert len(hierarchical_sample(single, x[:50], 20, strategy=strategy)) == 20
    with pytest.raises(ValueError, match=">= 0"):
        hierarchical_sample(h, x, -1)


def test_curated_subset_is_flatter_and_has_fewer_duplicates_than_random(tmp_path):
    # a long-tailed pool: Zipf-sized blobs, one attribute combination each, many near-copies
    sizes = [int(400 / (k + 1)) + 3 for k in range(20)]
    x, labels = blobs(sizes, dim=16, spread=0.3, seed=4, scale=1.0)
    copies = RNG.integers(0, len(x), 300)
    x = np.concatenate([x, x[copies] + RNG.normal(size=(300, 16)).astype(np.float32) * 1e-3])
    labels = np.concatenate([labels, labels[copies]])
    records = [PoolRecord(tmp_path / f"{i}.jpg", "", {"color": str(c % 5), "type": str(c // 5)})
               for i, c in enumerate(labels)]  # fmt: skip
    cfg = {"dedup_threshold": 0.999, "levels": [20, 5], "sample_sizes": [5, 2], "n_iter": 10,
           "resampling_steps": 2, "strategy": "r", "backend": "faiss"}  # fmt: skip
    curated = curate("curated_300", records, x, cfg, tmp_path / "c")
    random = curate("random_300", records, x, cfg, tmp_path / "r")
    assert curated["selected"] == random["selected"] == 300
    assert 250 <= curated["duplicates_removed"] <= 320
    assert curated["entropy_selected"] > random["entropy_selected"] + 0.1
    assert curated["near_duplicate_pairs_selected"] < random["near_duplicate_pairs_selected"]
    lines = (tmp_path / "c/manifest.csv").read_text().splitlines()
    assert lines[0] == "path,level0,level1,selected" and len(lines) == len(x) + 1
    assert sum(line.endswith(",1") for line in lines[1:]) == 300


def test_subset_names_and_bad_ones():
    assert parse_subset("curated_1000") == ("curated", 1000)
    assert parse_subset("random_0.25") == ("random", 0.25)
    assert parse_subset("full") == ("full", None)
    for bad in ("curated_-5", "curated", "random_1.5", "best_100"):
        with pytest.raises(ValueError, match="expected full, curated_<N> or random_<N>"):
            parse_subset(bad)


def test_dedup_keeps_the_first_copy():
    x = np.array([[1, 0], [1, 1e-4], [0, 1], [1, 2e-4]], dtype=np.float32)
    assert near_duplicates(x, 0.999).tolist() == [False, True, False, True]
    assert duplicate_pairs(x, 0.999) == 3
    assert attribute_entropy([PoolRecord("a", "", {"color": "red", "type": "suv"})] * 3) == 0.0
    assert len(random_sample(10, 20)) == 10


def test_embedding_resumes_from_its_chunks(tmp_path):
    from PIL import Image

    paths = []
    for i in range(10):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(path)
        paths.append(path)
    calls = []

    def encode(images):
        calls.append(len(images))
        return images.mean((2, 3))

    whole = embed_images(paths, encode, 8, tmp_path / "whole.npy", batch_size=2, chunk_batches=2)
    calls.clear()
    partial = tmp_path / "cut.npy.partial"
    partial.mkdir()
    np.save(partial / "000000000.npy", whole[:4])  # the first chunk survived a killed job
    resumed = embed_images(paths, encode, 8, tmp_path / "cut.npy", batch_size=2, chunk_batches=2)
    assert sum(calls) == 6 and (resumed == whole).all() and whole.dtype == np.float16
    assert not partial.exists() and (np.load(tmp_path / "cut.npy") == whole).all()


def test_bad_inputs_name_the_setting(tmp_path):
    from cgdmae.curation.subsets import load_embeddings

    x, labels = blobs([30, 30])
    records = [PoolRecord(tmp_path / f"{i}.jpg", "", {"color": "a", "type": "b"}) for i in labels]
    cfg = {"dedup_threshold": None, "levels": [2], "sample_sizes": [5], "n_iter": 2,
           "resampling_steps": 0, "strategy": "r", "backend": "faiss"}  # fmt: skip
    with pytest.raises(ValueError, match="curated_100 asks for 100 images, but the pool has 60"):
        curate("curated_100", records, x, cfg, tmp_path / "big")
    with pytest.raises(ValueError, match=r"levels\[0\] = 80 clusters.*only 60 points"):
        curate("curated_10", records, x, cfg | {"levels": [80]}, tmp_path / "k")
    with pytest.raises(FileNotFoundError, match="run the curation_embed rule"):
        load_embeddings(tmp_path / "none.npy", 60)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="bad.npy: not a readable .npy"):
        load_embeddings(tmp_path / "bad.npy", 60)
    np.save(tmp_path / "short.npy", x[:10])
    with pytest.raises(ValueError, match=r"shape \(10, 8\), expected 60 rows"):
        load_embeddings(tmp_path / "short.npy", 60)
