"""What the config and the tables know of each downstream task: its card, torch-free.

The dataset formats a task reads (checked before any job runs), its title and headline
metrics (the table columns) and whether its batch is P identities × K images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cgdmae.registry import Registry


@dataclass(frozen=True)
class TaskCard:
    """A downstream task as the config and the tables see it.

    - ``formats``: the dataset formats it reads (``datasets.<name>.format``);
    - ``title``: the table's column prefix; ``None`` prefixes with the dataset's name (ReID,
      whose columns are per dataset);
    - ``headline``: (metric key, column label) of the table's columns, and ``headline_by_dataset``
      those of a dataset whose protocol reports others (VehicleID: Rank-1 and Rank-5);
    - ``pk_batch``: the batch is P identities × ``instances`` images (a batch cap keeps it whole);
    - ``cmc_curve``: its metrics carry a CMC curve, which a figure plots.
    """

    name: str
    formats: tuple[str, ...]
    headline: tuple[tuple[str, str], ...]
    title: str | None = None
    headline_by_dataset: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    pk_batch: bool = False
    cmc_curve: bool = False


_CARDS: Registry[TaskCard] = Registry("downstream task", "tasks")


def register_task_card(card: TaskCard) -> TaskCard:
    return _CARDS.add(card.name, card)


def task_card(name: str) -> TaskCard:
    """The card of ``name``; an unknown name is a KeyError naming the known ones."""
    return _CARDS.get(name)


def task_cards() -> list[TaskCard]:
    """Every task, in the order of the main table's columns."""
    return _CARDS.items()


for _card in (
    TaskCard(
        "reid",
        ("veri776", "vehicleid", "veriwild", "market1501"),
        (("mAP", "mAP"), ("rank1", "R1")),
        headline_by_dataset={"vehicleid": (("rank1", "R1"), ("rank5", "R5"))},
        pk_batch=True,
        cmc_curve=True,
    ),
    TaskCard("var", ("veri776",), (("mA", "mA"),), "VAR"),
    TaskCard("vfr", ("image_folder",), (("top1", "top-1"),), "VFR"),
    TaskCard("vps", ("segmentation",), (("mIoU", "mIoU"),), "VPS"),
):
    register_task_card(_card)
