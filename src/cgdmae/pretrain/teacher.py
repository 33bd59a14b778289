"""The CLIP teacher: any open_clip model, pretrained or trained here on the pool's captions.

No weights can be downloaded at run time, so a pretrained teacher is resolved to a local file
first (a path, or the Hugging Face cache) and a missing file is reported by name before
open_clip is asked for anything. The embedded default instead trains a small open_clip model
with open_clip's own contrastive loss on the synthetic (image, caption) pairs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from timm.scheduler import CosineLRScheduler
from torch import nn
from tqdm import tqdm

from cgdmae.data import PoolRecord, load_rgb
from cgdmae.data.synth.world import VERI_COLORS, VERI_TYPES, VIEWPOINT_WORDS
from cgdmae.models import atomic_save
from cgdmae.pretrain.data import apply_crop, sample_crop

log = logging.getLogger(__name__)

DESCRIPTOR = "teacher.json"
WEIGHTS = "open_clip_model.pt"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class TeacherUnavailableError(FileNotFoundError):
    """The teacher's weights are not on this machine; the message says which file and how."""


class Teacher(nn.Module):
    """A frozen open_clip model with its preprocessing: images in [0, 1], unit-norm embeddings."""

    def __init__(self, clip: nn.Module, tokenizer, image_size: int, mean=CLIP_MEAN, std=CLIP_STD):
        super().__init__()
        self.clip = clip.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def embed_dim(self) -> int:
        return int(self.clip.text_projection.shape[1])

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # always frozen, whatever the method around it does

    @torch.no_grad()
    def encode_image(self, images01: torch.Tensor) -> torch.Tensor:
        if images01.shape[-2:] != (self.image_size, self.image_size):
            images01 = F.interpolate(
                images01, size=(self.image_size,) * 2, mode="bicubic", align_corners=False
            )
        return F.normalize(
            self.clip.encode_image((images01 - self.mean) / self.std).float(), dim=-1
        )

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.mean.device)
        return F.normalize(self.clip.encode_text(tokens).float(), dim=-1)


# ---- building -----------------------------------------------------------------------------------
def small_clip(cfg: dict[str, int]) -> open_clip.CLIP:
    """A small open_clip CLIP: a ViT image tower and a text transformer, sized by ``cfg``."""
    vision = CLIPVisionCfg(
        layers=cfg["vision_layers"],
        width=cfg["vision_width"],
        head_width=32,
        patch_size=cfg["patch_size"],
        image_size=cfg["image_size"],
    )
    text = CLIPTextCfg(
        context_length=cfg["context_length"],
        width=cfg["text_width"],
        heads=cfg["text_heads"],
        layers=cfg["text_layers"],
    )
    return open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=vision, text_cfg=text)


def _tokenizer(context_length: int):
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def resolve_pretrained(name: str, pretrained: str) -> str:
    """A local weights file for an open_clip model, or an error naming the file to provide."""
    looks_like_path = os.sep in pretrained or Path(pretrained).suffix in (
        ".pt",
        ".pth",
        ".bin",
        ".safetensors",
    )
    if looks_like_path:
        if not Path(pretrained).is_file():
            raise TeacherUnavailableError(
                f"teacher weights file {pretrained} does not exist; point `pretrained` at an "
                f"open_clip checkpoint of {name} on this machine"
            )
        return pretrained
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not cfg:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise TeacherUnavailableError(
            f"open_clip has no pretrained tag {pretrained!r} for {name} (known: {known})"
        )
    from huggingface_hub import constants, try_to_load_from_cache

    repo = cfg.get("hf_hub", "").rstrip("/")
    if repo:
        for filename in HUB_FILES:
            cached = try_to_load_from_cache(repo, filename)
            if isinstance(cached, str):
                return cached
    wanted = f"{repo}/{HUB_FILES[1]}" if repo else cfg.get("url", "?")
    raise TeacherUnavailableError(
        f"the weights of open_clip {name} ({pretrained}) are not on this machine: expected "
        f"{wanted} in the Hugging Face cache {constants.HF_HUB_CACHE}. On a machine with internet, "
        f"run `huggingface-cli download {repo or '<repo>'} {HUB_FILES[1]}` and copy the file here, then "
        f"set the teacher's `pretrained:` to its path (models are never downloaded at run time)"
    )


def load_teacher(model_dir: str | Path, device: str | torch.device = "cpu") -> Teacher:
    """The teacher described by ``model_dir/teacher.json`` (trained here or pretrained)."""
    model_dir = Path(model_dir)
    try:
        descriptor = json.loads((model_dir / DESCRIPTOR).read_text())
    except FileNotFoundError:
        raise TeacherUnavailableError(
            f"{model_dir / DESCRIPTOR} is missing: build the teacher rule first"
        ) from None
    if descriptor["source"] == "train":
        clip = small_clip(descriptor["model"])
        clip.load_state_dict(torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True))
        teacher = Teacher(
            clip,
            _tokenizer(descriptor["model"]["context_length"]),
            descriptor["model"]["image_size"],
        )
    else:
        weights = resolve_pretrained(descriptor["name"], descriptor["pretrained"])
        clip, _, preprocess = open_clip.create_model_and_transforms(
            descriptor["name"], pretrained=weights
        )
        size = clip.visual.image_size
        size = size[0] if isinstance(size, tuple | list) else size
        cfg = open_clip.get_pretrained_cfg(descriptor["name"], descriptor["pretrained"]) or {}
        teacher = Teacher(
            clip,
            open_clip.get_tokenizer(descriptor["name"]),
            int(size),
            cfg.get("mean", CLIP_MEAN),
            cfg.get("std", CLIP_STD),
        )
    return teacher.to(device)


def random_teacher(name: str, device: str | torch.device = "cpu") -> Teacher:
    """An open_clip architecture with random weights (throughput benchmarks only)."""
    clip = open_clip.create_model(name, pretrained=None)
    size = clip.visual.image_size
    return Teacher(
        clip,
        open_clip.get_tokenizer(name),
        int(size[0] if isinstance(size, tuple | list) else size),
    ).to(device)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


# ---- prompts and zero-shot ----------------------------------------------------------------------
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def attribute_prompts(templates: Sequence[str]) -> list[str]:
    """Every template filled with every colour × type: the text anchors of the KL loss."""
    return [
        t.format(color=c, type=ty, a=_article(c))
        for t in templates
        for c in VERI_COLORS
        for ty in VERI_TYPES
    ]


def _class_embeddings(teacher: Teacher, classes: Sequence[str], attribute: str) -> torch.Tensor:
    """Prompt ensemble per class: the caption style, averaged over the other attribute and views."""
    rows = []
    for value in classes:
        if attribute == "color":
            texts = [
                f"a photo of {_article(value)} {value} {t} seen {v}"
                for t in VERI_TYPES
                for v in VIEWPOINT_WORDS.values()
            ]
        else:
            texts = [
                f"a photo of {_article(c)} {c} {value} seen {v}"
                for c in VERI_COLORS
                for v in VIEWPOINT_WORDS.values()
            ]
        rows.append(F.normalize(teacher.encode_text(texts).mean(0), dim=0))
    return torch.stack(rows)


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
    device = teacher.mean.device
    heads = {
        a: _class_embeddings(teacher, VERI_COLORS if a == "color" else VERI_TYPES, a)
        for a in ("color", "type")
    }
    correct = {"color": 0, "type": 0}
    for start in range(0, len(labelled), batch_size):
        chunk = labelled[start : start + batch_size]
        images = torch.stack([_to_tensor(load_rgb(r.path), teacher.image_size) for r in chunk]).to(
            device
        )
        features = teacher.encode_image(images)
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


def _to_tensor(image, size: int) -> torch.Tensor:
    import torchvision.transforms.functional as TF

    return TF.to_tensor(image.resize((size, size)))


# ---- training the small teacher -----------------------------------------------------------------
def split_holdout(
    records: Sequence[PoolRecord], fraction: float, seed: int
) -> tuple[list[PoolRecord], list[PoolRecord]]:
    """Hold out whole tracks (near-duplicate runs), so no held-out frame was seen in training."""
    groups = [r.attributes.get("track", str(k)) for k, r in enumerate(records)]
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
) -> dict[str, Any]:
    """Train a small CLIP with open_clip's ClipLoss; write weights, descriptor and zero-shot metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    train_records, test_records = split_holdout(records, holdout_fraction, seed)
    size = model["image_size"]
    images = torch.stack(
        [(_to_tensor(load_rgb(r.path), size) * 255).to(torch.uint8) for r in train_records]
    )
    tokenizer = _tokenizer(model["context_length"])
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
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(train_records), generator=generator)
        total = 0.0
        for start in tqdm(
            range(0, steps_per_epoch * batch_size, batch_size),
            desc=f"teacher epoch {epoch + 1}/{epochs}",
            disable=None,
            leave=False,
        ):
            idx = order[start : start + batch_size]
            batch = images[idx].float() / 255
            flip = torch.rand(len(idx), generator=generator) < 0.5
            batch[flip] = batch[flip].flip(-1)
            out = clip((batch - teacher.mean) / teacher.std, tokens[idx])
            loss = loss_fn(out[0], out[1], out[2])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            total += loss.item()
        history.append(total / steps_per_epoch)
        log.info("teacher epoch %d/%d: contrastive loss %.4f", epoch + 1, epochs, history[-1])
    clip.eval().requires_grad_(False)
    metrics = zero_shot_accuracy(teacher, test_records)
    metrics.update(
        source="train", epochs=epochs, train_images=len(train_records), loss_per_epoch=history
    )
    atomic_save(clip.state_dict(), out_dir / WEIGHTS)
    _write_json(out_dir / DESCRIPTOR, {"source": "train", "model": dict(model)})
    return metrics


def describe_pretrained(name: str, pretrained: str, out_dir: str | Path) -> None:
    """Check the weights are on this machine (fail fast otherwise) and record where they are."""
    resolve_pretrained(name, pretrained)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(
        out_dir / DESCRIPTOR, {"source": "pretrained", "name": name, "pretrained": pretrained}
    )


# ---- cached targets -----------------------------------------------------------------------------
def cache_teacher_targets(
    teacher: Teacher,
    paths: Sequence[str | Path],
    out_path: str | Path,
    *,
    views: int,
    img_size: tuple[int, int],
    scale: tuple[float, float],
    seed: int,
    batch_size: int = 128,
) -> None:
    """For K fixed augmented views per image: the crop and the teacher's unit-norm embedding.

    The teacher sees the crop at the student's resolution (then its own), exactly what the
    online mode gives it, so cached and online targets agree.
    """
    n = len(paths)
    crops = torch.zeros(n, views, 5, dtype=torch.int32)
    embeds = torch.zeros(n, views, teacher.embed_dim, dtype=torch.float16)
    pending: list[tuple[int, int, torch.Tensor]] = []

    def flush() -> None:
        batch = torch.stack([t for _, _, t in pending]).to(teacher.mean.device)
        out = teacher.encode_image(batch).half().cpu()
        for (i, k, _), e in zip(pending, out, strict=True):
            embeds[i, k] = e
        pending.clear()

    for i, path in enumerate(tqdm(paths, desc="teacher targets", disable=None)):
        image = load_rgb(path)
        for k in range(views):
            crop = sample_crop(
                np.random.default_rng([seed, 7919, i, k]), image.width, image.height, scale
            )
            crops[i, k] = torch.tensor(crop.as_row(), dtype=torch.int32)
            pending.append((i, k, apply_crop(image, crop, img_size)))
            if len(pending) >= batch_size:
                flush()
    if pending:
        flush()
    atomic_save(
        {"paths": [str(p) for p in paths], "crops": crops, "embeds": embeds, "views": views},
        out_path,
    )


__all__ = [
    "Teacher",
    "TeacherUnavailableError",
    "attribute_prompts",
    "cache_teacher_targets",
    "describe_pretrained",
    "load_teacher",
    "random_teacher",
    "resolve_pretrained",
    "small_clip",
    "train_small_teacher",
    "zero_shot_accuracy",
]
