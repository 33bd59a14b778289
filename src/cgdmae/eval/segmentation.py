"""Segmentation metrics from an accumulated confusion matrix (mmseg's conventions)."""

from __future__ import annotations

import numpy as np
import torch


class SegmentationMeter:
    """mIoU, mAcc and pixel accuracy over everything passed to ``update``; 255 is ignored.

    A class with no ground-truth pixels has no accuracy and, when also never predicted, no IoU:
    it is NaN and left out of the means.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        keep = target != self.ignore_index
        index = target[keep].long() * self.num_classes + pred[keep].long()
        counts = torch.bincount(index.cpu(), minlength=self.num_classes**2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, object]:
        confusion = self.confusion.double().numpy()
        true_positive = np.diag(confusion)
        ground_truth, predicted = confusion.sum(1), confusion.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = true_positive / (ground_truth + predicted - true_positive)
            accuracy = true_positive / ground_truth
        return {
            "mIoU": float(np.nanmean(iou)),
            "mAcc": float(np.nanmean(accuracy)),
            "aAcc": float(true_positive.sum() / max(confusion.sum(), 1)),
            "iou_per_class": iou.tolist(),
            "acc_per_class": accuracy.tolist(),
        }
