"""Readers for the real on-disk layouts of the public datasets (and their synthetic copies),
one module per format.

Each reader checks the layout as it goes and raises ``DatasetFormatError`` naming the file and
line at fault: a missing split, a name that breaks the dataset's naming rule, a malformed line,
a list entry with no image. Decoding every image is optional (``check_images``) because it
costs a full read of the dataset; ``skip_corrupt`` then drops the images that fail to decode
and logs them, instead of failing on the first.
"""

from cgdmae.data.readers.classification import read_classification_csv, read_image_folder
from cgdmae.data.readers.market1501 import read_market1501
from cgdmae.data.readers.pool import read_manifest, read_pool
from cgdmae.data.readers.segmentation import check_mask, read_segmentation
from cgdmae.data.readers.vehicleid import read_vehicleid, vehicleid_query_gallery
from cgdmae.data.readers.veri776 import (
    VeriLabel,
    read_veri776,
    read_veri_id_names,
    read_veri_labels,
)
from cgdmae.data.readers.veriwild import read_veriwild

__all__ = [
    "VeriLabel",
    "check_mask",
    "read_classification_csv",
    "read_image_folder",
    "read_manifest",
    "read_market1501",
    "read_pool",
    "read_segmentation",
    "read_vehicleid",
    "read_veri776",
    "read_veri_id_names",
    "read_veri_labels",
    "read_veriwild",
    "vehicleid_query_gallery",
]
