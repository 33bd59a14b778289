"""Evaluation protocols: ReID (mAP, CMC, mINP, re-ranking), attributes, segmentation."""
