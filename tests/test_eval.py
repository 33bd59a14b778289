"""Evaluation protocols against independent brute-force references and hand-computed values."""

import numpy as np
import pytest
import torch

from cgdmae.eval.classification import attribute_metrics, top1_accuracy
from cgdmae.eval.reid import compute_distmat, evaluate, evaluate_features, vehicleid_protocol
from cgdmae.eval.rerank import re_ranking
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


def test_re_ranking_keeps_the_original_at_lambda_one_and_helps_on_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16)) * 3
    pids = np.repeat(np.arange(6), 6)
    feats = centres[pids] + rng.normal(size=(36, 16)) * 2.5
    query, gallery = np.arange(0, 36, 6), np.setdiff1d(np.arange(36), np.arange(0, 36, 6))
    q_g = compute_distmat(feats[query], feats[gallery])
    q_q = compute_distmat(feats[query], feats[query])
    g_g = compute_distmat(feats[gallery], feats[gallery])
    same = re_ranking(q_g, q_q, g_g, k1=5, k2=3, lambda_value=1.0)
    scale = np.block([[q_q, q_g], [q_g.T, g_g]]).max(0)[len(query) :]
    np.testing.assert_allclose(same, q_g / scale, rtol=1e-5)
    cams = np.zeros(6), np.ones(30)
    before = evaluate(q_g, pids[query], pids[gallery], *cams)["mAP"]
    after = evaluate(re_ranking(q_g, q_q, g_g, k1=5, k2=3), pids[query], pids[gallery], *cams)
    assert after["mAP"] > before


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
