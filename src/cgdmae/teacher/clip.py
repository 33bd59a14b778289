"""The CLIP teacher: any open_clip model, pretrained or trained here on the pool's captions.

No weights can be downloaded at run time, so a pretrained teacher is resolved to a local file
first (a path, open_clip's URL cache or the Hugging Face cache) and a missing file is reported
by name before open_clip is asked for anything; open_clip then runs with the Hub offline. The
embedded default instead trains a small open_clip model with open_clip's own contrastive loss
on the synthetic (image, caption) pairs and saves it as an open_clip ``local-dir:`` model
(``open_clip_config.json`` + ``open_clip_pytorch_model.bin``), loadable by open_clip alone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from open_clip.loss import ClipLoss
from timm.scheduler import CosineLRScheduler
from torch import nn
from tqdm import tqdm

from cgdmae.data import PoolRecord, load_rgb
from cgdmae.data.synth.world import VERI_COLORS, VERI_TYPES, VIEWPOINT_WORDS
from cgdmae.files import atomic_write, write_json
from cgdmae.models import atomic_save

log = logging.getLogger(__name__)

DESCRIPTOR = "teacher.json"
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_pytorch_model.bin"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")


class TeacherUnavailableError(FileNotFoundError):
    """The teacher's weights are not on this machine; the message says which file and how."""


class Teacher(nn.Module):
    """A frozen open_clip model with its preprocessing: images in [0, 1], unit-norm embeddings."""

    def __init__(
        self,
        clip: nn.Module,
        tokenizer,
        image_size: int,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ):
        super().__init__()
        self.clip = clip.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_open_clip(cls, clip: nn.Module, tokenizer) -> Teacher:
        """Size, mean and std from the preprocessing config open_clip attaches to the model."""
        cfg = getattr(clip.visual, "preprocess_cfg", {})
        size = clip.visual.image_size
        size = size[0] if isinstance(size, tuple | list) else size
        return cls(clip, tokenizer, int(size), cfg.get("mean", CLIP_MEAN), cfg.get("std", CLIP_STD))

    @property
    def embed_dim(self) -> int:
        return int(self.clip.text_projection.shape[1])

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # always frozen, whatever the method around it does

    @torch.no_grad()
    def encode_image(self, images01: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] at any size (resized bicubic to the teacher's) → [B, C]."""
        if images01.shape[-2:] != (self.image_size, self.image_size):
            images01 = F.interpolate(
                images01, size=(self.image_size,) * 2, mode="bicubic", align_corners=False
            )
        features = self.clip.encode_image((images01 - self.mean) / self.std)
        return F.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.mean.device)
        return F.normalize(self.clip.encode_text(tokens).float(), dim=-1)


# ---- the small teacher's architecture -----------------------------------------------------------
def open_clip_model_cfg(model: dict[str, int]) -> dict[str, Any]:
    """open_clip's model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) from ours."""
    return {
        "embed_dim": model["embed_dim"],
        "vision_cfg": {
            "image_size": model["image_size"],
            "patch_size": model["patch_size"],
            "width": model["vision_width"],
            "layers": model["vision_layers"],
            "head_width": 32,
        },
        "text_cfg": {
            "context_length": model["context_length"],
            "width": model["text_width"],
            "heads": model["text_heads"],
            "layers": model["text_layers"],
        },
    }


def small_clip(model: dict[str, int]) -> open_clip.CLIP:
    """A small open_clip CLIP: a ViT image tower and a text transformer, sized by ``model``."""
    return open_clip.CLIP(**open_clip_model_cfg(model))


# ---- pretrained weights, resolved offline -------------------------------------------------------
@contextmanager
def hub_offline() -> Iterator[None]:
    """open_clip may reach for the Hugging Face Hub (configs, tokenizers); here it must not."""
    from huggingface_hub import constants

    saved = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved[1]
        if saved[0] is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved[0]


def _hub_filenames(filename: str) -> list[str]:
    """The file open_clip would fetch, preceded by the safetensors twin it tries first."""
    if filename == OPEN_CLIP_WEIGHTS:
        return ["open_clip_model.safetensors", filename]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def resolve_pretrained(name: str, pretrained: str, config_key: str = "pretrained") -> str:
    """A local weights file for open_clip ``name``, or an error naming the file to provide.

    ``pretrained`` is a checkpoint path or one of open_clip's tags; a tag is looked up, without
    network, where open_clip would have downloaded it: its URL cache (~/.cache/clip) and the
    Hugging Face cache (``HF_HUB_CACHE``). ``config_key`` is named in the error as the setting
    to change.
    """
    if os.sep in pretrained or pretrained.endswith(WEIGHT_SUFFIXES):
        if not Path(pretrained).is_file():
            raise TeacherUnavailableError(
                f"{config_key}: teacher weights file {pretrained} does not exist; copy an "
                f"open_clip checkpoint of {name} there or set {config_key} to one on this machine"
            )
        return pretrained
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not cfg:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise TeacherUnavailableError(
            f"{config_key}: open_clip has no pretrained tag {pretrained!r} for {name} "
            f"(known: {known}); give a known tag or a local checkpoint path"
        )
    if "file" in cfg:
        return resolve_pretrained(name, cfg["file"], config_key)
    looked, sources = [], []
    if cfg.get("hf_hub"):
        from huggingface_hub import constants, try_to_load_from_cache

        cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
        repo, filename = os.path.split(cfg["hf_hub"])  # "org/name/" or "org/name/file"
        filename = filename or OPEN_CLIP_WEIGHTS
        for candidate in _hub_filenames(filename):
            found = try_to_load_from_cache(repo, candidate, cache_dir=cache)
            if isinstance(found, str):
                return found
        looked.append(f"{repo}/{filename} in the Hugging Face cache {cache}")
        sources.append(f"https://huggingface.co/{repo}/resolve/main/{filename}")
    if cfg.get("url"):
        cached = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        if cached.is_file():
            return str(cached)
        looked.append(str(cached))
        sources.append(cfg["url"])
    raise TeacherUnavailableError(
        f"the weights of open_clip {name}/{pretrained} are not on this machine (looked for "
        f"{' and '.join(looked)}). Models are never downloaded at run time: download "
        f"{' or '.join(sources)} to a path on this machine and set {config_key} to that path"
    )


def _pretrained_teacher(name: str, pretrained: str, config_key: str) -> Teacher:
    """open_clip on the local file, with the tag's QuickGELU and mean/std when it came from a tag.

    A bare checkpoint path carries no tag, so OpenAI weights given as a file need the
    ``-quickgelu`` model name (e.g. ``ViT-L-14-quickgelu``), as in open_clip itself.
    """
    weights = resolve_pretrained(name, pretrained, config_key)
    tag_cfg = {} if weights == pretrained else open_clip.get_pretrained_cfg(name, pretrained)
    with hub_offline():
        clip = open_clip.create_model(
            name,
            pretrained=weights,
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            force_preprocess_cfg={k: tag_cfg[k] for k in ("mean", "std") if k in tag_cfg},
        )
        tokenizer = open_clip.get_tokenizer(name)
    return Teacher.from_open_clip(clip, tokenizer)


def load_teacher(
    model_dir: str | Path, device: str | torch.device = "auto", config_key: str = "pretrained"
) -> Teacher:
    """The teacher described by ``model_dir/teacher.json`` (trained here or pretrained), on
    ``device``: ``auto`` is the GPU when there is one (the teacher-target and text jobs ask
    Slurm for one), else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model_dir = Path(model_dir)
    try:
        descriptor = json.loads((model_dir / DESCRIPTOR).read_text())
    except FileNotFoundError:
        raise TeacherUnavailableError(
            f"{model_dir / DESCRIPTOR} is missing: build the teacher rule first"
        ) from None
    if descriptor["source"] == "pretrained":
        return _pretrained_teacher(descriptor["name"], descriptor["pretrained"], config_key).to(
            device
        )
    for needed in (OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS):
        if not (model_dir / needed).is_file():
            raise TeacherUnavailableError(
                f"{model_dir / needed} is missing: rebuild the teacher (snakemake --forcerun teacher)"
            )
    with hub_offline():
        clip = open_clip.create_model(f"local-dir:{model_dir}")
        tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    return Teacher.from_open_clip(clip, tokenizer).to(device)


def random_teacher(name: str, device: str | torch.device = "cpu") -> Teacher:
    """An open_clip architecture with random weights (throughput benchmarks only)."""
    with hub_offline():
        clip = open_clip.create_model(name, pretrained=None)
        tokenizer = open_clip.get_tokenizer(name)
    return Teacher.from_open_clip(clip, tokenizer).to(device)


def save_random_weights(name: str, path: str | Path, seed: int = 0) -> int:
    """Write a randomly initialised open_clip ``name`` as a local checkpoint file, in float16 as
    OpenAI's are, so the ``pretrained: <file>`` path runs where no weights can be downloaded (a
    rehearsal). Returns the parameter count."""

    torch.manual_seed(seed)
    with hub_offline():
        clip = open_clip.create_model(name, pretrained=None)
    state = {k: v.half() if v.is_floating_point() else v for k, v in clip.state_dict().items()}
    atomic_write(path, lambda f: torch.save(state, f))
    return sum(p.numel() for p in clip.parameters())


def describe_pretrained(
    name: str, pretrained: str, out_dir: str | Path, config_key: str = "pretrained"
) -> None:
    """Check the weights are on this machine (fail fast otherwise) and record where they are."""
    resolve_pretrained(name, pretrained, config_key)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        out_dir / DESCRIPTOR, {"source": "pretrained", "name": name, "pretrained": pretrained}
    )


# ---- prompts and zero-shot ----------------------------------------------------------------------
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def attribute_prompts(templates: Sequence[str]) -> list[str]:
    """Every template filled with every colour × type: the text anchors of the KL loss.

    Templates use ``{color}``, ``{type}`` and ``{a}`` (the colour's article).
    """
    return [
        t.format(color=c, type=ty, a=_article(c))
        for t in templates
        for c in VERI_COLORS
        for ty in VERI_TYPES
    ]


def save_text_anchors(teacher_dir: str | Path, templates: Sequence[str], path: str | Path) -> int:
    """Embed the KL anchors (every template × colour × type) once, for every run that uses
    them: a pre-training job with cached targets then never loads the CLIP teacher (a ViT-L/14
    is 1.7 GB per rank and takes longer to load than a step). Returns the anchor count."""

    prompts = attribute_prompts(templates)
    with torch.no_grad():
        embeddings = load_teacher(teacher_dir).encode_text(prompts).float()
    record = {"templates": list(templates), "prompts": prompts, "embeddings": embeddings}
    atomic_write(path, lambda f: torch.save(record, f))
    return len(prompts)


def load_text_anchors(path: str | Path, templates: Sequence[str]) -> torch.Tensor:
    """The anchors :func:`save_text_anchors` wrote, checked against the run's templates."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["templates"] != list(templates):
        raise ValueError(
            f"{path} holds the text anchors of the templates {saved['templates']}, but the run's "
            f"distill.templates are {list(templates)}"
        )
    return saved["embeddings"]


def _class_embeddings(teacher: Teacher, attribute: str) -> torch.Tensor:
    """Prompt ensemble per class: the caption style, averaged over the other attribute and views."""
    rows = []
    for value in VERI_COLORS if attribute == "color" else VERI_TYPES:
        pairs = (
            [(value, t) for t in VERI_TYPES]
            if attribute == "color"
            else [(c, value) for c in VERI_COLORS]
        )
        texts = [
            f"a photo of {_article(c)} {c} {t} seen {view}"
            for c, t in pairs
            for view in VIEWPOINT_WORDS.values()
        ]
        rows.append(F.normalize(teacher.encode_text(texts).mean(0), dim=0))
    return torch.stack(rows)


def _resized(path: str | Path, size: int) -> torch.Tensor:
    return TF.to_tensor(load_rgb(path).resize((size, size)))


def zero_shot_accuracy(
    teacher: Teacher, records: Sequence[PoolRecord], batch_size: int = 256
) -> dict[str, float]:
    """Colour and type accuracy of prompt-ensemble zero-shot classification (chance: 10% and 11%)."""
    labelled = [
        r
        for r in records
        if r.attributes.get("color") in VERI_COLORS and r.attributes.get("type") in VERI_TYPES
    ]
    if not labelled:
        return {"n": 0}
    heads = {
        "color": _class_embeddings(teacher, "color"),
        "type": _class_embeddings(teacher, "type"),
    }
    correct = {"color": 0, "type": 0}
    for start in range(0, len(labelled), batch_size):
        chunk = labelled[start : start + batch_size]
        images = torch.stack([_resized(r.path, teacher.image_size) for r in chunk])
        features = teacher.encode_image(images.to(teacher.mean.device))
        for attribute, classes in (("color", VERI_COLORS), ("type", VERI_TYPES)):
            predicted = (features @ heads[attribute].T).argmax(1).cpu()
            truth = torch.tensor([classes.index(r.attributes[attribute]) for r in chunk])
            correct[attribute] += int((predicted == truth).sum())
    n = len(labelled)
    return {
        "n": n,
        "color_acc": correct["color"] / n,
        "type_acc": correct["type"] / n,
        "color_chance": 1 / len(VERI_COLORS),
        "type_chance": 1 / len(VERI_TYPES),
    }


# ---- training the small teacher -----------------------------------------------------------------
def split_holdout(
    records: Sequence[PoolRecord], fraction: float, seed: int
) -> tuple[list[PoolRecord], list[PoolRecord]]:
    """Hold out whole identities (else tracks), so no held-out vehicle was seen in training."""
    groups = [
        r.attributes.get("identity") or r.attributes.get("track") or str(k)
        for k, r in enumerate(records)
    ]
    unique = sorted(set(groups))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(unique, size=max(1, int(len(unique) * fraction)), replace=False).tolist())
    train = [r for r, g in zip(records, groups, strict=True) if g not in held]
    test = [r for r, g in zip(records, groups, strict=True) if g in held]
    return train, test


def train_small_teacher(
    records: Sequence[PoolRecord],
    out_dir: str | Path,
    *,
    model: dict[str, int],
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    holdout_fraction: float,
    seed: int = 0,
    metrics_path: str | Path | None = None,
) -> dict[str, Any]:
    """Train a small CLIP with open_clip's ClipLoss on (image, caption) pairs.

    Writes the open_clip ``local-dir:`` model and ``teacher.json`` into ``out_dir`` and returns
    the zero-shot colour/type accuracy on held-out identities (also written to
    ``metrics_path`` when given).
    """
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    train_records, test_records = split_holdout(records, holdout_fraction, seed)
    size = model["image_size"]
    images = torch.stack([(_resized(r.path, size) * 255).to(torch.uint8) for r in train_records])
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=model["context_length"])
    tokens = tokenizer([r.caption for r in train_records])
    clip = small_clip(model)
    teacher = Teacher(clip, tokenizer, size)
    clip.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(
        clip.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98)
    )
    steps_per_epoch = max(1, len(train_records) // batch_size)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=epochs * steps_per_epoch,
        warmup_t=steps_per_epoch,
        warmup_lr_init=lr / 100,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    loss_fn = ClipLoss()
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        order = torch.randperm(len(train_records), generator=generator)
        total = 0.0
        for step in tqdm(
            range(steps_per_epoch), desc=f"teacher epoch {epoch + 1}/{epochs}", disable=None
        ):
            idx = order[step * batch_size : (step + 1) * batch_size]
            batch = images[idx].float() / 255
            flip = torch.rand(len(idx), generator=generator) < 0.5
            batch[flip] = batch[flip].flip(-1)
            image_features, text_features, logit_scale = clip(
                (batch - teacher.mean) / teacher.std, tokens[idx]
            )
            loss = loss_fn(image_features, text_features, logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step_update(epoch * steps_per_epoch + step + 1)
            total += loss.item()
        history.append(total / steps_per_epoch)
        log.info("teacher epoch %d/%d: contrastive loss %.4f", epoch + 1, epochs, history[-1])
    clip.eval().requires_grad_(False)
    metrics = zero_shot_accuracy(teacher, test_records)
    metrics.update(
        source="train",
        epochs=epochs,
        train_images=len(train_records),
        heldout_images=len(test_records),
        loss_per_epoch=history,
    )
    atomic_save(clip.state_dict(), out_dir / OPEN_CLIP_WEIGHTS)
    write_json(
        out_dir / OPEN_CLIP_CONFIG,
        {
            "model_cfg": open_clip_model_cfg(model),
            "preprocess_cfg": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
        },
    )
    write_json(out_dir / DESCRIPTOR, {"source": "train", "model": dict(model)})
    if metrics_path is not None:
        write_json(metrics_path, metrics)
    return metrics


__all__ = [
    "Teacher",
    "TeacherUnavailableError",
    "attribute_prompts",
    "describe_pretrained",
    "save_random_weights",
    "hub_offline",
    "load_teacher",
    "open_clip_model_cfg",
    "random_teacher",
    "resolve_pretrained",
    "small_clip",
    "train_small_teacher",
    "zero_shot_accuracy",
]
