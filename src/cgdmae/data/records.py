"""Typed records the readers return and the torch Datasets wrap."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class DatasetFormatError(ValueError):
    """A dataset on disk does not have the layout its reader expects; names file and line."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = Path(path) if path is not None else None
        self.line = line
        where = f"{path}:{line}: " if line is not None else f"{path}: " if path is not None else ""
        super().__init__(where + message)


@dataclass(frozen=True)
class ReidRecord:
    """One ReID image. ``pid`` is the dataset's id; ``label`` the 0-based train class."""

    path: Path
    pid: int
    camid: int
    label: int = -1
    frame: int = -1
    color: int = -1
    type: int = -1


@dataclass(frozen=True)
class ReidSplits:
    train: list[ReidRecord]
    query: list[ReidRecord]
    gallery: list[ReidRecord]

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
    """An unlabeled pre-training image, its caption, and hidden labels where known."""

    path: Path
    caption: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
