"""Typed records the readers return and the torch Datasets wrap.

Integer attributes use -1 for "not known", so a record list can be batched without None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ReidRecord:
    """One ReID image.

    ``pid`` is the dataset's own vehicle/person id; ``label`` is the 0-based class index that
    train splits get for the classification loss (-1 elsewhere). ``camid`` is 0-based where
    the dataset numbers cameras from 1. ``color``, ``type`` and ``model`` are 0-based ids.
    """

    path: Path
    pid: int
    camid: int
    label: int = -1
    frame: int = -1
    color: int = -1
    type: int = -1
    model: int = -1


@dataclass(frozen=True)
class ReidSplits:
    """Train, query and gallery of a ReID dataset, and its attribute names where it has them."""

    train: list[ReidRecord]
    query: list[ReidRecord]
    gallery: list[ReidRecord]
    color_names: list[str] = field(default_factory=list)
    type_names: list[str] = field(default_factory=list)

    @property
    def num_train_ids(self) -> int:
        return len({r.pid for r in self.train})


@dataclass(frozen=True)
class ClassRecord:
    path: Path
    label: int


@dataclass(frozen=True)
class ClassificationSplit:
    records: list[ClassRecord]
    classes: list[str]


@dataclass(frozen=True)
class SegRecord:
    image: Path
    mask: Path


@dataclass(frozen=True)
class SegmentationSplit:
    records: list[SegRecord]
    classes: list[str]


@dataclass(frozen=True)
class PoolRecord:
    """An unlabeled pre-training image, its caption, and the hidden labels where known."""

    path: Path
    caption: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
