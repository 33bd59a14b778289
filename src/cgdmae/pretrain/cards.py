"""What the config, the workflow and the report know of each pre-training method: its card.

A card is torch-free, so the Snakefile reads it at parse time: the rule inputs a method
needs (a CLIP teacher, another run's checkpoint), its own config section, the keys it never
reads, its loss terms (the loss-curve panels) and whether its decoder reconstructs images.
The method's module (``cgdmae.pretrain.methods``) holds the model, the loss and the builder.
A new method registers a card here and a class there, and touches no other file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cgdmae.registry import Registry

# `pretrain` keys (dotted, as in overrides and ablation axes) that a method never reads: a run
# of that method setting one, or an ablation of one on such a run, would train the same thing
# again, so validation refuses it. The MAE decoder's sizes still change the random draw of the
# initialisation (its mask token is drawn before the encoder's blocks), nothing else.
UNUSED_DECODER = (
    "model.decoder_dim",
    "model.decoder_depth",
    "model.decoder_heads",
    "model.norm_pix_loss",
)
# methods that make their own views ignore these
OWN_VIEWS = ("cached_crops", "cache_views", "decode_draft")
TRAINING_KEYS = (
    "dataset",
    "mask_ratio",
    "mask_strategy",
    "epochs",
    "warmup_epochs",
    "batch_size",
    "accum_iter",
    "blr",
    "max_lr",
    "min_lr",
    "weight_decay",
    "weight_decay_end",
    "betas",
    "clip_grad",
    "crop_scale",
)


@dataclass(frozen=True)
class MethodCard:
    """A pre-training method as the config, the workflow and the report see it.

    - ``section``: the ``pretrain`` section only this method reads (kept in its runs' specs
      only, so another method's settings never rerun it);
    - ``loss_terms``: the terms its ``forward`` logs besides ``loss``, in plot order;
    - ``ignored_keys``: ``pretrain`` keys it never reads (setting one is refused);
    - ``trains``: False for a method that exports its initialisation (``scratch``);
    - ``reconstructs``: its MAE decoder reconstructs the masked patches (a figure shows them);
    - ``clip_teacher``: it distils ``<section>.teacher``, a CLIP teacher, with cached or
      online targets (``<section>.targets``) and text anchors (``<section>.templates``);
    - ``teacher_run``: it may distil another run's model, ``<section>.teacher_run``;
    - ``patch_multiples``: ``pretrain`` sizes (dotted keys) it cuts into whole patches;
    - ``section_schema``: the JSON schema of its section, for a method whose section is not in
      the schema file (a plugin's); its defaults fill the section as the file's do.
    """

    name: str
    loss_terms: tuple[str, ...]
    section: str | None = None
    ignored_keys: tuple[str, ...] = ()
    trains: bool = True
    reconstructs: bool = True
    clip_teacher: bool = False
    teacher_run: bool = False
    patch_multiples: tuple[str, ...] = ()
    section_schema: Mapping[str, Any] | None = field(default=None, compare=False)

    def clip_teacher_of(self, spec: Mapping[str, Any]) -> str | None:
        """The CLIP teacher a run of this method distils, if any."""
        return spec[self.section]["teacher"] if self.clip_teacher else None

    def cached_targets(self, spec: Mapping[str, Any]) -> bool:
        """Whether the run trains on its teacher's cached targets (and so on their views)."""
        return self.clip_teacher and spec[self.section]["targets"] == "cached"

    def teacher_run_of(self, spec: Mapping[str, Any]) -> str | None:
        """The run whose model a run of this method distils, if any."""
        return spec[self.section]["teacher_run"] if self.teacher_run else None


_CARDS: Registry[MethodCard] = Registry("pre-training method", "methods")


def register_card(card: MethodCard) -> MethodCard:
    return _CARDS.add(card.name, card)


def method_card(name: str) -> MethodCard:
    """The card of ``name``; an unknown name is a KeyError naming the known ones."""
    return _CARDS.get(name)


def method_cards() -> list[MethodCard]:
    return _CARDS.items()


for _card in (
    MethodCard("mae", ("mae",)),
    MethodCard(
        "scratch",
        (),
        ignored_keys=(*OWN_VIEWS, *TRAINING_KEYS, *UNUSED_DECODER),
        trains=False,
        reconstructs=False,
    ),
    MethodCard("cgd_mae", ("mae", "sim", "kl"), "distill", ("cached_crops",), clip_teacher=True),
    MethodCard("person_mae", ("pixel", "feature"), "person_mae", OWN_VIEWS),
    # DINO + MIM on its own multi-crop views and block masks; the MAE's pixel decoder stays
    # frozen and unused
    MethodCard(
        "person_vit",
        ("dino", "mim"),
        "person_vit",
        ("mask_ratio", "mask_strategy", "crop_scale", *UNUSED_DECODER, *OWN_VIEWS),
        reconstructs=False,
        patch_multiples=("model.img_size", "person_vit.local_size"),
    ),
    MethodCard("mae_lite", ("mae", "distill"), "mae_lite", teacher_run=True),
):
    register_card(_card)
