"""The pre-training side of the engine's ``Trainable`` contract (``cgdmae.training.engine``).

Every method is an ``nn.Module`` that owns a masked autoencoder in facebookresearch/mae's
state-dict layout under ``self.model``. The engine only ever calls ``forward``,
``on_step_end`` and ``encoder_state_dict``, so methods plug into one loop, one checkpoint
format and one export. A method also builds itself from a run's spec (``from_spec``) and
makes its own views (``views``); its card (``cgdmae.pretrain.cards``) is what the config and
the workflow know of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from cgdmae.pretrain.data import PretrainDataset
from cgdmae.registry import Registry

_METHODS: Registry[type[PretrainMethod]] = Registry("pre-training method", "methods")


@dataclass(frozen=True)
class MethodInputs:
    """The files a run's method reads besides its images (its rule's inputs, its card says
    which): a CLIP teacher's directory and text anchors, another run's checkpoint."""

    teacher_dir: str | Path | None = None
    text_anchors: str | Path | None = None
    teacher_checkpoint: str | Path | None = None


class PretrainMethod(nn.Module):
    """Base class: subclasses set ``self.model`` and implement ``forward``.

    ``forward(batch)`` receives the collated batch dict from the data loader (``image`` plus any
    method-specific keys) and returns a dict of scalar tensors; ``loss`` is the one that is
    back-propagated, every other entry is logged per epoch.

    Submodules whose names start with one of ``frozen_prefixes`` hold weights that come from
    elsewhere (a frozen CLIP teacher, say); the engine leaves them out of checkpoints and of the
    optimizer.
    """

    name: ClassVar[str] = ""
    frozen_prefixes: ClassVar[tuple[str, ...]] = ()
    model: nn.Module

    @classmethod
    def from_spec(cls, model: nn.Module, spec: dict[str, Any], inputs: MethodInputs):
        """The method around ``model`` with a run's resolved spec and its files."""
        return cls(model, **cls.settings(spec))

    @classmethod
    def settings(cls, spec: dict[str, Any]) -> dict[str, Any]:
        """The constructor's keywords from a run's spec: MAE-style methods take only the mask
        ratio, the others read their own section. The values always come from a spec, so the
        schema states each default once (constructors have none)."""
        return {"mask_ratio": spec["mask_ratio"]}

    @classmethod
    def views(
        cls,
        spec: dict[str, Any],
        paths: Sequence[Path],
        seed: int,
        targets: Any = None,
        targets_file: str | Path | None = None,
    ) -> Dataset:
        """What the method trains on: MAE's random resized crops, or the fixed views of a
        teacher's cached ``targets`` (``cgdmae.pretrain.data.TeacherTargets``)."""
        return PretrainDataset(
            paths,
            img_size=tuple(spec["model"]["img_size"]),
            scale=tuple(spec["crop_scale"]),
            seed=seed,
            targets=targets,
            targets_file=targets_file,
            draft=spec.get("decode_draft", False),
        )

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Hook after each optimizer step (EMA updates, momentum schedules)."""

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder-only weights for ``encoder.pth`` (timm / MAE ``models_vit`` layout)."""
        from cgdmae.models import encoder_state_dict

        return encoder_state_dict(self.model)


def register_method(name: str) -> Callable[[type[PretrainMethod]], type[PretrainMethod]]:
    """Class decorator adding a method to the registry under ``name``."""

    def wrap(cls: type[PretrainMethod]) -> type[PretrainMethod]:
        cls.name = name
        return _METHODS.add(name, cls)

    return wrap


def method_class(name: str) -> type[PretrainMethod]:
    """Look a method up by name; an unknown name is a KeyError naming the known ones."""
    return _METHODS.get(name)


def with_defaults(name: str, *args: Any, **overrides: Any) -> PretrainMethod:
    """``name``'s method built from ``args`` (the model, and what its class takes besides)
    at the schema's defaults, with ``overrides`` of its keywords: for benchmarks and tests,
    which have no run spec."""
    from cgdmae.config import schema_defaults

    cls = method_class(name)
    spec = {"method": name, **schema_defaults()["pretrain"]}
    return cls(*args, **(cls.settings(spec) | overrides))


def available_methods() -> list[str]:
    return sorted(_METHODS.names())
