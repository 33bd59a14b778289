"""Curation: the balanced sampler's guarantees, k-means on blobs, resampling, dedup, subsets,
resume."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cgdmae.curation.dedup import duplicate_pairs, near_duplicates
from cgdmae.curation.embed import embed_images
from cgdmae.curation.kmeans import (
    hierarchical_kmeans,
    kmeans,
    kmeans_level,
    kmeans_plus_plus,
    lloyd,
    nearest_centroid,
    potential,
)
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


def mixture(n_major, n_minor, n_components, dim, seed=0):
    """Gaussian components at random places; component 0 holds ``n_major`` points."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_components, dim)) * 6
    labels = np.repeat(np.arange(n_components), [n_major] + [n_minor] * (n_components - 1))
    return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32), labels


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_resampling_moves_centroids_out_of_the_dominant_component(backend):
    # component 0 holds 1000 of 1960 points (51 %); 40 clusters, sample ≈ half a cluster
    x, labels = mixture(1000, 40, 25, dim=4)
    points = torch.from_numpy(x)

    def in_dominant(steps):
        centroids, _ = kmeans(points, 40, n_iter=20, resampling_steps=steps, sample_size=10,
                              backend=backend)  # fmt: skip
        nearest, _ = nearest_centroid(centroids, points)  # each centroid's closest point
        return int((labels[nearest.numpy()] == 0).sum())

    without, with_resampling = in_dominant(0), in_dominant(5)
    assert without >= 8  # plain k-means spends centroids on the mass
    assert with_resampling <= without / 2


def test_resampling_restarts_from_a_fresh_kmeans_plus_plus():
    x, _ = mixture(1000, 40, 25, dim=4)
    level = kmeans_level(torch.from_numpy(x), 40, n_iter=20, resampling_steps=3, sample_size=10)
    moved = (level.centroids - level.initial).norm(dim=1)
    assert (moved > 0.5).float().mean() > 0.5  # not a few Lloyd steps from where they were
    assert (level.assign == nearest_centroid(torch.from_numpy(x), level.centroids)[0]).all()


def test_greedy_kmeans_plus_plus_starts_lower_than_one_candidate():
    x, _ = blobs([50] * 40, dim=8, spread=1.0, scale=4.0)
    points = torch.from_numpy(x)
    greedy, single = [], []
    for seed in range(8):

        def seeded(trials, seed=seed):
            return kmeans_plus_plus(points, 40, torch.Generator().manual_seed(seed), trials)

        greedy.append(potential(points, seeded(None)))  # 2 + ⌊ln 40⌋ = 5 candidates
        single.append(potential(points, seeded(1)))
    assert np.mean(greedy) < 0.9 * np.mean(single)
    start = kmeans_plus_plus(points, 40, torch.Generator().manual_seed(0))
    assert len(np.unique(start.numpy(), axis=0)) == 40  # centres are distinct data points
    assert torch.isin(start, points).all(1).all()


def test_backends_agree_on_a_fixed_start_and_keep_empty_clusters():
    x, _ = blobs([40, 60, 80, 100], spread=0.5)
    points = torch.from_numpy(x)
    far = torch.full((2, x.shape[1]), 100.0)
    far[1] *= -1  # two centroids no point is ever closest to
    start = torch.cat([points[[0, 45, 110, 200, 250]], far])
    faiss_c = lloyd(points, start, 10, "faiss")
    torch_c = lloyd(points, start, 10, "torch")
    assert torch.allclose(faiss_c, torch_c, atol=1e-5)
    assert (faiss_c[5:] == far).all() and (torch_c[5:] == far).all()  # the empty ones stay
    assert (nearest_centroid(points, faiss_c)[0] == nearest_centroid(points, torch_c)[0]).all()
    runs = [kmeans(points, 6, n_iter=10, resampling_steps=3, sample_size=20, backend=b)
            for b in ("faiss", "torch")]  # fmt: skip
    assert torch.allclose(runs[0][0], runs[1][0], atol=1e-4)
    assert (runs[0][1] == runs[1][1]).all()


def test_per_level_resampling_settings():
    x, _ = blobs([30] * 12)
    one = hierarchical_kmeans(x, [12, 3], sample_sizes=5, n_iter=5, resampling_steps=[2, 0])
    listed = hierarchical_kmeans(x, [12, 3], sample_sizes=[5, 5], n_iter=5,
                                 resampling_steps=[2, 0])  # fmt: skip
    assert all((a == b).all() for a, b in zip(one.assignments, listed.assignments, strict=True))
    assert (one.centroids[1] == one.initial_centroids[1]).all()  # no resampling at level 1
    assert not np.allclose(one.centroids[0], one.initial_centroids[0])
    with pytest.raises(ValueError, match="resampling_steps has 3 entries, levels has 2"):
        hierarchical_kmeans(x, [12, 3], sample_sizes=5, resampling_steps=[1, 1, 1])


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


def test_curated_subset_is_flatter_than_both_baselines(tmp_path):
    # a long-tailed pool: Zipf-sized blobs, one attribute combination each, many near-copies
    sizes = [int(400 / (k + 1)) + 3 for k in range(20)]
    x, labels = blobs(sizes, dim=16, spread=0.3, seed=4, scale=1.0)
    copies = RNG.integers(0, len(x), 300)
    x = np.concatenate([x, x[copies] + RNG.normal(size=(300, 16)).astype(np.float32) * 1e-3])
    labels = np.concatenate([labels, labels[copies]])
    records = [PoolRecord(tmp_path / f"{i}.jpg", "", {"color": str(c % 5), "type": str(c // 5)})
               for i, c in enumerate(labels)]  # fmt: skip
    cfg = {"dedup_threshold": 0.999, "levels": [40, 10], "sample_sizes": [18, 2], "n_iter": 10,
           "resampling_steps": 5, "strategy": "r", "backend": "faiss"}  # fmt: skip
    curated = curate("curated_300", records, x, cfg, tmp_path / "c")
    dedup = curate("random_dedup_300", records, x, cfg, tmp_path / "d")
    random = curate("random_300", records, x, cfg, tmp_path / "r")
    assert curated["selected"] == dedup["selected"] == random["selected"] == 300
    assert 250 <= curated["duplicates_removed"] <= 320
    assert curated["entropy_selected"] > max(dedup["entropy_selected"], random["entropy_selected"])
    # the smallest quarter of the clusters: about their pool share at random, more when curated
    assert curated["tail_clusters"] == 10
    assert curated["tail_share_selected"] > 2 * max(dedup["tail_share_selected"],
                                                    random["tail_share_selected"])  # fmt: skip
    assert curated["largest_cluster_share_selected"] < random["largest_cluster_share_selected"]
    assert curated["tail_share_pool"] == random["tail_share_pool"] < 0.1
    # dedup alone removes the near-copies that a raw random draw keeps
    assert curated["near_duplicate_pairs_selected"] == dedup["near_duplicate_pairs_selected"] == 0
    assert random["near_duplicate_pairs_selected"] > 0
    lines = (tmp_path / "c/manifest.csv").read_text().splitlines()
    assert lines[0] == "path,level0,level1,selected" and len(lines) == len(x) + 1
    assert sum(line.endswith(",1") for line in lines[1:]) == 300
    picked = [line for line in (tmp_path / "d/manifest.csv").read_text().splitlines()[1:]
              if line.endswith(",1")]  # fmt: skip
    assert len(picked) == 300 and not any(",-1," in line for line in picked)  # none removed
    moved = json.loads((tmp_path / "c/resampling.json").read_text())
    kept = len(x) - curated["duplicates_removed"]
    for stage in ("before", "after"):
        assert len(moved[stage]["centroids"]) == 40 and len(moved[stage]["centroids"][0]) == 2
        assert sum(moved[stage]["sizes"]) == kept
    assert moved["after"]["sizes"] == curated["cluster_sizes_before"][0]
    # fewer centroids left in the dense blob: its clusters grow
    assert max(moved["after"]["sizes"]) > max(moved["before"]["sizes"])


def test_subset_names_and_bad_ones():
    assert parse_subset("curated_1000") == ("curated", 1000)
    assert parse_subset("random_0.25") == ("random", 0.25)
    assert parse_subset("random_dedup_1000") == ("random_dedup", 1000)
    assert parse_subset("random_dedup_0.5") == ("random_dedup", 0.5)
    assert parse_subset("full") == ("full", None)
    for bad in ("curated_-5", "curated", "random_1.5", "best_100", "random_dedup", "dedup_10"):
        with pytest.raises(ValueError, match="expected full, curated_<N>, random_dedup_<N> or"):
            parse_subset(bad)


def test_subset_pattern_of_the_schema_matches_the_parser():
    import re
    from pathlib import Path

    import yaml

    schema = yaml.safe_load(Path("workflow/schemas/config.schema.yaml").read_text())
    pattern = schema["properties"]["curation"]["properties"]["subsets"]["items"]["pattern"]
    for name in ("full", "curated_1000", "random_0.25", "random_dedup_1000", "random_dedup_1.0"):
        assert re.match(pattern, name)
        parse_subset(name)
    for bad in ("random_dedup", "dedup_10", "random_dedup_1.5", "curated_"):
        assert not re.match(pattern, bad)


def test_dedup_keeps_the_first_copy():
    x = np.array([[1, 0], [1, 1e-4], [0, 1], [1, 2e-4]], dtype=np.float32)
    assert near_duplicates(x, 0.999).tolist() == [False, True, False, True]
    assert duplicate_pairs(x, 0.999) == 3
    assert attribute_entropy([PoolRecord("a", "", {"color": "red", "type": "suv"})] * 3) == 0.0
    assert len(random_sample(10, 20)) == 10


def test_dedup_at_one_removes_exact_copies_only():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 384)).astype(np.float32)
    pool = np.concatenate([x, x[:10], 3 * x[:5], x[:5] + 1e-2])  # copies, scaled, near-copies
    drop = near_duplicates(pool, 1.0)
    assert drop[:60].sum() == 0 and drop[60:75].all() and not drop[75:].any()
    assert duplicate_pairs(pool, 1.0) == 5 * 3 + 5  # x[:5] thrice, x[5:10] twice
    assert duplicate_pairs(pool, 0.99) == 5 * 6 + 5  # the near-copies join x[:5] at 0.99


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


def test_subsets_sampled_from_saved_pool_clusters_are_those_curated_from_scratch(tmp_path):
    """The pool is clustered once (curation_clusters) and each subset sampled from the saved
    result: the same files, byte for byte, as a subset that clusters the pool itself."""
    from cgdmae.curation.subsets import PoolClusters, cluster_pool

    x, labels = blobs([40, 25, 10], dim=8, spread=0.3, seed=2, scale=1.0)
    x = np.concatenate([x, x[:6] + 1e-4])  # near-copies for dedup
    records = [PoolRecord(tmp_path / f"{i}.jpg", "", {"color": str(i % 3), "type": "b"})
               for i in range(len(x))]  # fmt: skip
    cfg = {"dedup_threshold": 0.999, "levels": [6, 2], "sample_sizes": [4, 2], "n_iter": 5,
           "resampling_steps": 3, "strategy": "r", "backend": "torch"}  # fmt: skip
    cluster_pool(x, cfg, seed=3).save(tmp_path / "clusters.npz")
    clusters = PoolClusters.load(tmp_path / "clusters.npz", len(x))
    for name in ("curated_30", "random_dedup_0.5", "random_30"):
        curate(name, records, x, cfg, tmp_path / "own" / name, seed=3)
        curate(name, records, x, cfg, tmp_path / "shared" / name, seed=3, clusters=clusters)
        for file in ("manifest.csv", "stats.json", "resampling.json"):
            own, shared = (tmp_path / d / name / file for d in ("own", "shared"))
            assert own.read_bytes() == shared.read_bytes(), (name, file)
    with pytest.raises(ValueError, match=r"clusters\.npz: clusters of 81 images, the pool has 90"):
        PoolClusters.load(tmp_path / "clusters.npz", 90)


def test_images_skipped_as_corrupt_are_in_no_subset(tmp_path):
    """data.on_corrupt: skip embeds an image that does not decode as a NaN row; no subset,
    curated or random, selects it, and the pool's other rows are embedded as before."""
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(paths[-1])
    paths[2].write_bytes(b"not a png")
    encode = lambda images: images.mean((2, 3))  # noqa: E731
    x = embed_images(paths, encode, 8, tmp_path / "x.npy", batch_size=2, skip=[paths[2]])
    assert np.isnan(x[2]).all() and not np.isnan(np.delete(x, 2, 0)).any()
    blank = embed_images(paths, encode, 8, tmp_path / "y.npy", batch_size=1, skip=[paths[2]])
    assert np.array_equal(blank, x, equal_nan=True)  # a batch of skipped images only

    x, labels = blobs([30, 30])
    x[[5, 40]] = np.nan
    records = [PoolRecord(tmp_path / f"{i}.jpg", "", {"color": "a", "type": "b"}) for i in labels]
    cfg = {"dedup_threshold": None, "levels": [2], "sample_sizes": [5], "n_iter": 2,
           "resampling_steps": 0, "strategy": "r", "backend": "torch"}  # fmt: skip
    for name in ("curated_58", "random_58", "random_dedup_58", "full"):
        curate(name, records, x, cfg, tmp_path / name)
        rows = (tmp_path / name / "manifest.csv").read_text().splitlines()[1:]
        chosen = [k for k, row in enumerate(rows) if row.endswith(",1")]
        assert len(chosen) == 58 and 5 not in chosen and 40 not in chosen, name
    with pytest.raises(ValueError, match="random_59 asks for 59 images, but the pool has 58"):
        curate("random_59", records, x, cfg, tmp_path / "r59")


def test_sharded_embeddings_join_into_the_unsharded_file(tmp_path):
    from cgdmae.curation.embed import gather_embeddings

    paths = []
    for i in range(9):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (8, 8), (i * 20, 5 * i, 0)).save(paths[-1])
    encode = lambda images: images.mean((2, 3))  # noqa: E731
    settings = dict(batch_size=2, chunk_batches=1)
    whole = embed_images(paths, encode, 8, tmp_path / "whole.npy", **settings)
    shards = [tmp_path / f"s{i}.npz" for i in range(2)]
    for i, shard in enumerate(shards):
        embed_images(paths, encode, 8, shard, shard=i, shards=2, **settings)
    joined = gather_embeddings(shards[::-1], tmp_path / "joined.npy")
    assert np.array_equal(joined, whole) and np.array_equal(np.load(tmp_path / "joined.npy"), whole)
    with pytest.raises(ValueError, match="not the 1 shards of one pool's embeddings"):
        gather_embeddings(shards[1:], tmp_path / "bad.npy")
    # more shards than chunks (three chunks of 4 images): the fourth shard has none
    shards = [tmp_path / f"q{i}.npz" for i in range(4)]
    for i, shard in enumerate(shards):
        embed_images(paths, encode, 8, shard, shard=i, shards=4, batch_size=4)
    assert np.array_equal(gather_embeddings(shards, tmp_path / "four.npy"), whole)


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


def test_curation_figure_draws_the_centroids_before_and_after_resampling(tmp_path):
    from PIL import Image

    from cgdmae.report.figures import curation_figure, save_figure

    x, labels = blobs([60, 20, 20, 20])
    records = []
    for i, label in enumerate(labels):
        path = tmp_path / f"img/{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (60 * int(label), 0, 0)).save(path)
        records.append(PoolRecord(path, "", {"color": str(label), "type": "car"}))
    cfg = {"dedup_threshold": None, "levels": [8], "sample_sizes": 5, "n_iter": 5,
           "resampling_steps": 2, "strategy": "r", "backend": "torch"}  # fmt: skip
    out = tmp_path / "curated_40"
    curate("curated_40", records, x, cfg, out)
    fig = curation_figure(out / "stats.json", out / "manifest.csv", out / "resampling.json")
    panel = next(ax for ax in fig.axes if ax.get_title().startswith("finest centroids"))
    sizes = [c.get_sizes() for c in panel.collections]  # points, before, after
    assert len(sizes) == 3 and len(sizes[1]) == len(sizes[2]) == 8
    assert "smallest 2 clusters" in fig.axes[0].get_title()
    pdf, png = save_figure(fig, tmp_path / "figure")
    assert pdf.stat().st_size > 0 and png.stat().st_size > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_torch_backend_on_the_gpu():
    x, labels = mixture(1000, 40, 25, dim=4)
    points = torch.from_numpy(x)
    start = points[torch.arange(0, 1960, 49)]
    on_gpu = lloyd(points.cuda(), start.cuda(), 10, "torch")
    assert on_gpu.is_cuda and torch.allclose(on_gpu.cpu(), lloyd(points, start, 10, "torch"),
                                             atol=1e-4)  # fmt: skip
    counts = []
    for steps in (0, 5):
        h = hierarchical_kmeans(x, [40], sample_sizes=10, n_iter=20, resampling_steps=steps,
                                backend="torch")  # fmt: skip
        nearest, _ = nearest_centroid(torch.from_numpy(h.centroids[0]), points)
        counts.append(int((labels[nearest.numpy()] == 0).sum()))
    assert counts[1] <= counts[0] / 2


def test_figure_and_table_files_keep_a_fractional_subset_name(tmp_path):
    """`curation_curated_0.25` is a stem, not a name with the suffix `.25`."""
    import matplotlib.pyplot as plt

    from cgdmae.report.figures import save_figure
    from cgdmae.report.tables import Table, write_table

    written = save_figure(plt.figure(), tmp_path / "curation_curated_0.25")
    assert [p.name for p in written] == ["curation_curated_0.25.pdf", "curation_curated_0.25.png"]
    table = Table(caption="c", row_header="run", columns=[], rows=[])
    written = write_table(table, tmp_path / "ablation_x.y")
    assert [p.name for p in written] == ["ablation_x.y.tex", "ablation_x.y.md"]
