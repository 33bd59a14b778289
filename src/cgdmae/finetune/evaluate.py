"""Test-time evaluation of a fine-tuned task with the standard protocols (``cgdmae.eval``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cgdmae.eval.classification import attribute_metrics, top1_accuracy
from cgdmae.eval.reid import compute_distmat, evaluate, evaluate_features, vehicleid_protocol
from cgdmae.eval.rerank import re_ranking
from cgdmae.eval.segmentation import SegmentationMeter

if TYPE_CHECKING:  # the tasks call these functions
    from cgdmae.finetune.tasks import FinetuneTask

MetricDict = dict[str, Any]
CMC_RANKS = 20  # CMC points kept in metrics.json for the curves
Loader = Callable[[list[Any]], DataLoader]  # a test loader over some records


@torch.no_grad()
def predict_all(module: FinetuneTask, loader: DataLoader, device: torch.device) -> Any:
    """Concatenate ``module.predict`` over a loader (tensors, or dicts of tensors); a module
    that ``uses_camera`` (ReID with SIE) gets the batch's camera ids too."""
    outputs = []
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        if module.uses_camera:
            outputs.append(module.predict(images, batch["camid"].to(device)))
        else:
            outputs.append(module.predict(images))
    if isinstance(outputs[0], dict):
        return {k: torch.cat([o[k] for o in outputs]).float().cpu() for k in outputs[0]}
    return torch.cat(outputs).float().cpu()


def _ids(records: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([r.pid for r in records]), np.array([r.camid for r in records])


def reid_metrics(
    query: torch.Tensor, gallery: torch.Tensor, q: list[Any], g: list[Any], spec: dict[str, Any]
) -> MetricDict:
    """mAP, CMC and mINP; with ``rerank`` the k-reciprocal distances (needs full matrices)."""
    (q_pids, q_cams), (g_pids, g_cams) = _ids(q), _ids(g)
    if not spec["rerank"]:
        result = evaluate_features(query, gallery, q_pids, g_pids, q_cams, g_cams)
    else:
        distances = re_ranking(
            compute_distmat(query, gallery),
            compute_distmat(query, query),
            compute_distmat(gallery, gallery),
        )
        result = evaluate(distances, q_pids, g_pids, q_cams, g_cams)
    metrics = {k: float(result[k]) for k in ("mAP", "mINP", "rank1", "rank5", "rank10")}
    return metrics | {"cmc": [float(v) for v in result["cmc"][:CMC_RANKS]]}


def evaluate_reid(
    module: FinetuneTask, test: Any, loader: Loader, spec: dict[str, Any], seed: int, device
) -> MetricDict:
    """mAP, CMC and mINP of a (query, gallery) split; VehicleID's protocol (no query list)
    draws query and gallery itself, 10 times."""
    query, gallery = test
    if query:
        features = predict_all(module, loader([*query, *gallery]), device)
        return reid_metrics(features[: len(query)], features[len(query) :], query, gallery, spec)
    features = predict_all(module, loader(gallery), device)
    result = vehicleid_protocol(features, _ids(gallery)[0], repeats=10, seed=seed)
    return {k: float(v) for k, v in result.items()}


def evaluate_attributes(
    module: FinetuneTask, test: list[Any], loader: Loader, attributes: tuple[str, ...], device
) -> MetricDict:
    """Per attribute mA, accuracy and F1, and their means over the attributes."""
    logits = predict_all(module, loader(test), device)
    metrics: MetricDict = {
        attribute: attribute_metrics(
            logits[attribute],
            torch.tensor([getattr(r, attribute) for r in test]),
            logits[attribute].shape[1],
        )
        for attribute in attributes
    }
    for key in ("mA", "accuracy", "f1"):
        metrics[key] = float(np.mean([metrics[a][key] for a in attributes]))
    return metrics


def evaluate_top1(module: FinetuneTask, test: list[Any], loader: Loader, device) -> MetricDict:
    logits = predict_all(module, loader(test), device)
    labels = torch.tensor([r.label for r in test])
    return {"top1": float(top1_accuracy(logits, labels))}


@torch.no_grad()
def evaluate_segmentation(
    module: FinetuneTask, test: list[Any], loader: Loader, num_classes: int, device
) -> MetricDict:
    meter = SegmentationMeter(num_classes)
    for batch in loader(test):
        logits = module.predict(batch["image"].to(device))
        meter.update(logits.argmax(1).cpu(), batch["mask"])
    result = meter.compute()
    return {"mIoU": float(result["mIoU"]), "mAcc": float(result["mAcc"])}
