"""Datasets: the synthetic world, readers of the real on-disk formats, torch Datasets."""

from cgdmae.data.datasets import (
    ImageDataset,
    RandomIdentitySampler,
    SegmentationDataset,
    SegmentationTransform,
    load_mask,
    load_rgb,
)
from cgdmae.data.errors import DatasetFormatError
from cgdmae.data.readers import (
    read_classification_csv,
    read_image_folder,
    read_manifest,
    read_market1501,
    read_pool,
    read_segmentation,
    read_vehicleid,
    read_veri776,
    read_veriwild,
    vehicleid_query_gallery,
)
from cgdmae.data.records import (
    ClassificationSplit,
    ClassRecord,
    PoolRecord,
    ReidRecord,
    ReidSplits,
    SegmentationSplit,
    SegRecord,
)

__all__ = [
    "ClassRecord",
    "ClassificationSplit",
    "DatasetFormatError",
    "ImageDataset",
    "PoolRecord",
    "RandomIdentitySampler",
    "ReidRecord",
    "ReidSplits",
    "SegRecord",
    "SegmentationDataset",
    "SegmentationSplit",
    "SegmentationTransform",
    "load_mask",
    "load_rgb",
    "read_classification_csv",
    "read_image_folder",
    "read_manifest",
    "read_market1501",
    "read_pool",
    "read_segmentation",
    "read_vehicleid",
    "read_veri776",
    "read_veriwild",
    "vehicleid_query_gallery",
]
