"""Evaluation protocols against independent brute-force references and hand-computed values."""

import numpy as np
import pytest
import torch

from cgdmae.eval.classification import attribute_metrics, top1_accuracy
from cgdmae.eval.reid import compute_distmat, evaluate, evaluate_features, vehicleid_protocol
from cgdmae.eval.rerank import expanded_set, k_reciprocal, re_ranking
from cgdmae.eval.segmentation import SegmentationMeter


def reference(distmat, q_pids, g_pids, q_cams, g_cams, max_rank):
    """Straight from the definitions, one query at a time, in plain Python."""
    aps, inps, cmcs = [], [], []
    for i in range(len(q_pids)):
        order = sorted(range(len(g_pids)), key=lambda j: (distmat[i][j], j))
        order = [j for j in order if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        hits = [g_pids[j] == q_pids[i] for j in order]
        if not any(hits):
            continue
        ranks = [r + 1 for r, h in enumerate(hits) if h]
        aps.append(sum((k + 1) / r for k, r in enumerate(ranks)) / len(ranks))
        inps.append(len(ranks) / ranks[-1])
        cmcs.append([1.0 if ranks[0] <= r else 0.0 for r in range(1, max_rank + 1)])
    return np.mean(aps), np.mean(inps), np.mean(cmcs, axis=0)


@pytest.mark.parametrize("seed", range(6))
def test_evaluate_matches_brute_force_with_ties_and_unmatched_queries(seed):
    rng = np.random.default_rng(seed)
    nq, ng = 15, 40
    q_pids, g_pids = rng.integers(0, 8, nq), rng.integers(0, 6, ng)  # ids 6, 7: no match
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    distmat = rng.integers(0, 5, (nq, ng)).astype(float)  # many ties
    max_rank = 60  # larger than the gallery
    got = evaluate(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank, chunk_size=4)
    ap, inp, cmc = reference(distmat, q_pids, g_pids, q_cams, g_cams, max_rank)
    assert got["mAP"] == pytest.approx(ap) and got["mINP"] == pytest.approx(inp)
    np.testing.assert_allclose(got["cmc"], cmc)
    assert got["rank1"] == pytest.approx(cmc[0]) and got["rank5"] == pytest.approx(cmc[4])
    assert got["num_valid_queries"] < nq


def test_hand_computed_example():
    # query 0 (id 1, cam 0): gallery sorted ids [1(cam 0, removed), 2, 1, 1] -> hits at 2, 3
    # query 1 (id 2, cam 1): sorted [2 (cam 0), ...] -> hit at rank 1 only
    # query 2 (id 3): no id-3 item in the gallery -> skipped
    distmat = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.1, 0.3, 0.2], [0.1, 0.2, 0.3, 0.4]])
    g_pids, g_cams = np.array([1, 2, 1, 1]), np.array([0, 0, 1, 2])
    got = evaluate(distmat, np.array([1, 2, 3]), g_pids, np.array([0, 1, 0]), g_cams, max_rank=3)
    assert got["num_valid_queries"] == 2
    assert got["mAP"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1) / 2)
    assert got["mINP"] == pytest.approx((2 / 3 + 1) / 2)
    np.testing.assert_allclose(got["cmc"], [0.5, 1.0, 1.0])


def test_no_valid_query_is_an_error():
    with pytest.raises(ValueError, match="no query has a valid match"):
        evaluate(np.zeros((2, 2)), [1, 2], [1, 2], [0, 0], [0, 0])


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_features_equal_the_full_matrix(chunk):
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(23, 8)), rng.normal(size=(50, 8))
    ids = rng.integers(0, 5, 23), rng.integers(0, 5, 50)
    cams = rng.integers(0, 2, 23), rng.integers(0, 2, 50)
    full = evaluate(compute_distmat(q, g), ids[0], ids[1], cams[0], cams[1])
    chunked = evaluate_features(q, g, ids[0], ids[1], cams[0], cams[1], chunk_size=chunk)
    for key in ("mAP", "mINP", "rank1", "rank5"):
        assert chunked[key] == pytest.approx(full[key])


def test_vehicleid_protocol_is_seeded_and_perfect_features_score_one():
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(10), 3)
    noisy = rng.normal(size=(30, 4))
    assert vehicleid_protocol(noisy, pids, seed=3) == vehicleid_protocol(noisy, pids, seed=3)
    assert vehicleid_protocol(noisy, pids, seed=3) != vehicleid_protocol(noisy, pids, seed=4)
    perfect = np.eye(10)[pids] + 0.01 * rng.normal(size=(30, 10))
    assert vehicleid_protocol(perfect, pids)["rank1"] == 1.0


def rank_table(prefixes: dict[int, list[int]], n: int) -> np.ndarray:
    """Neighbour lists, nearest first: each row's prefix, then the other points in index order."""
    rows = []
    for p in range(n):
        head = prefixes.get(p, [p])
        rows.append(head + [j for j in range(n) if j not in head])
    return np.array(rows)


def test_k_reciprocal_expansion_compares_with_the_probes_own_set():
    # k1 = 6, so R(p, 6) looks at the 7 nearest (p first) and the candidates' sets R(q, 3) at the
    # 4 nearest. Row prefixes (the rest follows in index order):
    #   0: 0 1 2 3 4 5 6   1: 1 0 3 7   2: 2 7 3 8 0   3: 3 1 2 0   4/5/6: q 9 10 11 0
    #   7: 7 1 2 8         8: 8 2 7 9
    # R(0, 6) = {0..6}: each of 1..6 has 0 among its 7 nearest.
    # R(0, 3) = {0, 1, 3} (2's 4 nearest lack 0): all 3 in R(0, 6), nothing new.
    # R(1, 3) = {1, 0, 3, 7}: 3 of 4 in R(0, 6), 3 > 8/3: 7 joins.
    # R(2, 3) = {2, 7, 3, 8}: 2 of 4 in R(0, 6), 2 <= 8/3: rejected. Compared with the set as it
    #   grows ({0..7} after candidate 1) it would have 3 of 4 and bring 8 in.
    # R(3, 3) = {3, 1, 2, 0}: inside R(0, 6). R(q, 3) = {q} for q = 4, 5, 6: nothing new.
    prefixes = {
        0: [0, 1, 2, 3, 4, 5, 6],
        1: [1, 0, 3, 7],
        2: [2, 7, 3, 8, 0],
        3: [3, 1, 2, 0],
        4: [4, 9, 10, 11, 0],
        5: [5, 9, 10, 11, 0],
        6: [6, 9, 10, 11, 0],
        7: [7, 1, 2, 8],
        8: [8, 2, 7, 9],
    }
    rank = rank_table(prefixes, 12)
    assert list(k_reciprocal(rank, 0, 6)) == [0, 1, 2, 3, 4, 5, 6]
    assert sorted(k_reciprocal(rank, 1, 3)) == [0, 1, 3, 7]
    assert sorted(k_reciprocal(rank, 2, 3)) == [2, 3, 7, 8]
    assert list(expanded_set(rank, 0, 6)) == [0, 1, 2, 3, 4, 5, 6, 7]


# Four points on a line at 0, 1, 3 and 7, distance |x_i − x_j|; point 0 is the query.
LINE = np.array([0.0, 1.0, 3.0, 7.0])


def line_distances():
    d = np.abs(LINE[:, None] - LINE[None, :])
    return d[:1, 1:], d[:1, :1], d[1:, 1:]


def kernel(row_distances, members):
    """V(p) of Eq. 7: exp(−d) over the members of R*(p), normalised to sum 1, zero elsewhere."""
    v = np.zeros(4)
    v[members] = np.exp(-np.asarray(row_distances)[members])
    return v / v.sum()


def jaccard(a, b):
    return 1 - np.minimum(a, b).sum() / np.maximum(a, b).sum()


@pytest.mark.parametrize("k2", [1, 2])
def test_re_ranking_by_hand_on_four_points(k2):
    # Rows divided by their own maximum (7, 6, 4, 7):
    d = [np.array(r) for r in ([0, 1, 3, 7], [1, 0, 2, 6], [3, 2, 0, 4], [7, 6, 4, 0])]
    d = [r / r.max() for r in d]
    # k1 = 2: 3 nearest, 0: [0 1 2], 1: [1 0 2], 2: [2 1 0], 3: [3 2 1]. R(0) = R(1) = R(2) =
    # {0, 1, 2}; R(3) = {3} (neither 2 nor 1 has 3 among its 3 nearest). Half sets (2 nearest):
    # R(0, 1) = R(1, 1) = {0, 1}, R(2, 1) = {2}, R(3, 1) = {3}, all inside: R* = R.
    v = [kernel(d[p], [0, 1, 2]) for p in range(3)] + [kernel(d[3], [3])]
    if k2 == 2:  # mean over the 2 nearest: 0: {0, 1}, 1: {1, 0}, 2: {2, 1}, 3: {3, 2}
        v = [(v[0] + v[1]) / 2, (v[1] + v[0]) / 2, (v[2] + v[1]) / 2, (v[3] + v[2]) / 2]
    expected = [0.7 * jaccard(v[0], v[g]) + 0.3 * d[0][g] for g in (1, 2, 3)]
    got = re_ranking(*line_distances(), k1=2, k2=k2, lambda_value=0.3)
    np.testing.assert_allclose(got, [expected], rtol=1e-6)
    if k2 == 1:  # point 3 shares no weight with the query: Jaccard distance 1
        assert got[0, 2] == pytest.approx(0.7 + 0.3)
    else:  # 0 and 1 have the same expanded weights: only the original distance 1/7 is left
        assert got[0, 0] == pytest.approx(0.3 / 7)


def features(seed, ids=6, per=6, dim=16, noise=2.5):
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(ids), per)
    feats = (rng.normal(size=(ids, dim)) * 3)[pids] + rng.normal(size=(ids * per, dim)) * noise
    query = np.arange(0, ids * per, per)
    return feats, pids, query, np.setdiff1d(np.arange(ids * per), query)


@pytest.mark.parametrize(("seed", "k1", "k2"), [(0, 5, 3), (1, 20, 6), (2, 3, 1), (3, 8, 2)])
def test_re_ranking_at_lambda_one_keeps_the_original_ranking(seed, k1, k2):
    feats, _, query, gallery = features(seed)
    q_g = compute_distmat(feats[query], feats[gallery])
    q_q = compute_distmat(feats[query], feats[query])
    g_g = compute_distmat(feats[gallery], feats[gallery])
    same = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=1.0)
    # each query row is divided by its own maximum over query and gallery
    scale = np.concatenate([q_q, q_g], axis=1).max(axis=1, keepdims=True)
    np.testing.assert_allclose(same, q_g / scale, rtol=1e-5)
    np.testing.assert_array_equal(np.argsort(same, axis=1), np.argsort(q_g, axis=1))


def test_re_ranking_helps_on_clusters():
    feats, pids, query, gallery = features(0)
    q_g = compute_distmat(feats[query], feats[gallery])
    q_q = compute_distmat(feats[query], feats[query])
    g_g = compute_distmat(feats[gallery], feats[gallery])
    cams = np.zeros(len(query)), np.ones(len(gallery))
    before = evaluate(q_g, pids[query], pids[gallery], *cams)["mAP"]
    after = evaluate(re_ranking(q_g, q_q, g_g, k1=5, k2=3), pids[query], pids[gallery], *cams)
    assert after["mAP"] > before


def test_re_ranking_refuses_meaningless_parameters():
    with pytest.raises(ValueError, match="k1"):
        re_ranking(*line_distances(), k1=0)
    with pytest.raises(ValueError, match="lambda_value"):
        re_ranking(*line_distances(), lambda_value=1.5)


def test_attribute_metrics_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2, -1])
    preds = torch.tensor([0, 1, 1, 1, 0, 2])
    got = attribute_metrics(preds, labels, num_classes=4)  # class 3 absent: left out
    tpr, tnr = [1 / 2, 1, 0], [2 / 3, 2 / 3, 1]
    assert got["mA"] == pytest.approx(np.mean([(a + b) / 2 for a, b in zip(tpr, tnr, strict=True)]))
    assert got["accuracy"] == pytest.approx(3 / 5)
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) * 1 / (2 / 3 + 1), 0.0]
    assert got["f1"] == pytest.approx(np.mean(f1))
    assert top1_accuracy(torch.eye(3)[[0, 2, 1]], torch.tensor([0, 2, 2])) == pytest.approx(2 / 3)


def test_segmentation_meter_ignores_255():
    meter = SegmentationMeter(3)
    target = torch.tensor([[0, 0, 1, 255], [1, 1, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 2]])
    meter.update(pred, target)
    got = meter.compute()
    # class 0: tp 1, gt 2, pred 2 -> IoU 1/3; class 1: tp 2, gt 3, pred 3 -> IoU 2/4; class 2:
    # no ground truth, never predicted on kept pixels -> NaN, left out
    assert got["mIoU"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert got["mAcc"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert got["aAcc"] == pytest.approx(3 / 5)
