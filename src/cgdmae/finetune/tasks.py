"""Fine-tuning tasks as modules the training engine can drive (``cgdmae.training.engine``).

Each task owns ``self.model`` (the ViT backbone plus its heads, saved as the checkpoint's
``model``), returns its loss terms from ``forward(batch)`` and predicts with ``predict``. The
engine gives them the same resume, SIGTERM checkpoint and logging as pre-training.

- ReID: BoT/TransReID baseline. CLS feature → BNNeck (BatchNorm1d, bias frozen) → bias-free
  classifier; cross-entropy (optional label smoothing) on the logits plus batch-hard triplet
  (margin, or soft margin when ``margin`` is None) on the feature before the BN. The test
  feature is the one before the BN. TransReID*'s options (off by default): overlapping patches
  (``cgdmae.finetune.backbone``), SIE (a camera embedding added to the tokens) and JPM (a
  jigsaw-shuffled local branch of the last block, four local BNNecks); see :class:`ReidNet`.
- VAR: a colour head and a type head on the CLS feature; records with an unknown label (-1)
  are ignored by the loss.
- VFR: a linear classifier on the CLS (or mean-pooled patch) feature, full fine-tuning.
- VPS: UperNet over the grids of 4 blocks made a 4-level pyramid, as MAE's and BEiT's
  semantic segmentation (:class:`SegmenterNet`); cross-entropy with ignore index 255.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import Dataset

from cgdmae.data import SegmentationDataset, SegmentationTransform
from cgdmae.data.datasets import SEG_IGNORE
from cgdmae.finetune.cards import task_card
from cgdmae.finetune.data import (
    TaskData,
    image_test_set,
    image_train_set,
    reid_data,
    var_data,
    vfr_data,
    vps_data,
)
from cgdmae.finetune.evaluate import (
    Loader,
    MetricDict,
    evaluate_attributes,
    evaluate_reid,
    evaluate_segmentation,
    evaluate_top1,
)
from cgdmae.registry import Registry

UPERNET_CHANNELS = 768  # MAE's and BEiT's UperNet configs


def batch_hard_triplet(
    features: torch.Tensor, pids: torch.Tensor, margin: float | None
) -> torch.Tensor:
    """Hermans et al.'s batch-hard triplet loss on Euclidean distances.

    For each anchor the farthest positive and the closest negative; hinge with ``margin``, or
    softplus (soft margin) when ``margin`` is None.
    """
    dist = torch.cdist(features.float(), features.float())
    same = pids[:, None] == pids[None, :]
    hardest_positive = dist.masked_fill(~same, float("-inf")).amax(1)
    hardest_negative = dist.masked_fill(same, float("inf")).amin(1)
    gap = hardest_positive - hardest_negative
    if margin is None:
        return F.softplus(gap).mean()
    return F.relu(gap + margin).mean()


def init_head(head: nn.Linear, std: float) -> None:
    """MAE's head initialisation: truncated normal weights of ``std`` (2e-5), zero bias."""
    nn.init.trunc_normal_(head.weight, std=std)
    nn.init.zeros_(head.bias)


def cls_feature(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """The image feature by the backbone's own pooling: the final-norm CLS token
    (``global_pool='token'``), or MAE's mean of the patch tokens then ``fc_norm`` (``'avg'``)."""
    return vit.forward_head(vit.forward_features(images), pre_logits=True)


BACKBONE_PREFIX = "model.backbone."
NO_DECAY_NAMES = ("cls_token", "pos_embed")  # MAE: the ViT's no_weight_decay()
SIE_NAME = "model.sie_embed"  # ReID's camera embedding: layer 0, no decay (as pos_embed)
LOCAL_BLOCK_PREFIX = "model.local_block."  # JPM's copy of the last block
DECAY_RULES = ("mae", "transreid")


def vit_layer_id(name: str, num_layers: int) -> int:
    """MAE's layer id (``util/lr_decay.py``) of a parameter, named relative to the task module.

    0 for ``cls_token``, ``pos_embed`` and ``patch_embed``; ``i + 1`` for ``blocks.i``;
    ``num_layers`` (= blocks + 1) for everything else: the final norm, ``fc_norm`` and the heads.
    ReID's SIE embedding is at 0 with the position embedding, JPM's copy of the last block at
    the last block's id (its copy of the final norm at ``num_layers``, as the final norm).
    """
    if name == SIE_NAME:
        return 0
    if name.startswith(LOCAL_BLOCK_PREFIX):
        return num_layers - 1
    if not name.startswith(BACKBONE_PREFIX):
        return num_layers
    name = name[len(BACKBONE_PREFIX) :]
    if name in NO_DECAY_NAMES or name.startswith("patch_embed."):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


def param_groups(
    module: nn.Module,
    weight_decay: float,
    layer_decay: float | None,
    *,
    rule: str = "mae",
    bias_lr_factor: float = 1.0,
) -> list[dict[str, Any]]:
    """Parameter groups with ``lr_scale`` (applied by the engine's timm scheduler) and decay.

    - ``layer_decay``: MAE's layer-wise rate decay, ``lr_scale = layer_decay ** (num_layers -
      layer_id)`` with :func:`vit_layer_id` (``num_layers`` = blocks + 1), so the final norm and
      the heads train at the full rate and ``cls_token``/``pos_embed``/``patch_embed`` at
      ``layer_decay ** (blocks + 1)``. ``None``: every layer at scale 1.
    - ``rule='mae'`` (MAE, timm): no weight decay on 1-D parameters (biases, norms) nor on
      ``cls_token``, ``pos_embed`` and ReID's SIE embedding; everything else decays by
      ``weight_decay``.
    - ``rule='transreid'`` (TransReID's ``make_optimizer``): every parameter decays by
      ``weight_decay`` (the vehicle configs set ``WEIGHT_DECAY_BIAS`` equal to it).
    - ``bias_lr_factor``: biases train at this multiple of their layer's rate (TransReID: 2).

    Frozen parameters are left out. Groups come in descending ``lr_scale`` of their layer, the
    full-rate weights first, so ``param_groups[0]['lr']`` is the schedule's own value.
    """
    if rule not in DECAY_RULES:
        raise ValueError(f"unknown weight-decay rule {rule!r} (one of {', '.join(DECAY_RULES)})")
    blocks = getattr(module.model.backbone, "blocks", ())
    num_layers = len(blocks) + 1
    groups: dict[tuple[int, bool, bool], dict[str, Any]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        layer = vit_layer_id(name, num_layers)
        bias = name.endswith(".bias")
        short = name.removeprefix(BACKBONE_PREFIX)
        no_decay = param.ndim <= 1 or short in NO_DECAY_NAMES or name == SIE_NAME
        decays = rule == "transreid" or not no_decay
        scale = 1.0 if layer_decay is None else layer_decay ** (num_layers - layer)
        group = groups.setdefault(
            (layer, bias, decays),
            {
                "params": [],
                "lr_scale": scale * (bias_lr_factor if bias else 1.0),
                "weight_decay": weight_decay if decays else 0.0,
            },
        )
        group["params"].append(param)
    order = sorted(groups, key=lambda key: (-key[0], key[1], not key[2]))
    return [groups[key] for key in order]


class FinetuneTask(nn.Module):
    """The engine interface, fine-tuning side: nothing frozen, nothing exported.

    A task class also builds itself and its data (``read_data``, ``build``, ``train_set``,
    ``test_set``) and evaluates itself (``evaluate``), so a new task is its card
    (``cgdmae.finetune.cards``) and its class, registered with :func:`register_task`.
    """

    name: ClassVar[str] = ""
    frozen_prefixes: ClassVar[tuple[str, ...]] = ()
    exports_encoder: ClassVar[bool] = False
    head_names: ClassVar[tuple[str, ...]] = ()  # the heads MAE's ``head_init_std`` applies to
    strided: ClassVar[bool] = False  # takes TransReID*'s overlapping patch ``stride``
    test_autocast: ClassVar[bool] = True  # tests under bf16 autocast on a GPU (MAE's evaluate)
    rand_augment: ClassVar[bool] = False  # may train with MAE's RandAugment recipe
    model: nn.Module
    # the optimizer recipe (set from the task's config by cgdmae.finetune.run.build_task)
    decay_rule: str = "mae"
    bias_lr_factor: float = 1.0
    nesterov: bool = True  # SGD only
    # predict() takes the images' camera ids too (ReID with SIE)
    uses_camera: bool = False

    @classmethod
    def read_data(cls, fmt: str, root: str | Path, spec: dict[str, Any]) -> TaskData:
        """The train and test records of a dataset of format ``fmt`` (one of the card's)."""
        raise NotImplementedError

    @classmethod
    def build(cls, backbone: VisionTransformer, data: TaskData, spec: dict[str, Any]):
        """The task around ``backbone``, with its heads sized by ``data``."""
        raise NotImplementedError

    @classmethod
    def train_set(cls, records: list[Any], size: tuple[int, int], spec: dict[str, Any]) -> Dataset:
        return image_train_set(records, size, spec, cls.rand_augment)

    @classmethod
    def test_set(cls, records: list[Any], size: tuple[int, int], spec: dict[str, Any]) -> Dataset:
        return image_test_set(records, size, spec)

    def evaluate(
        self, data: TaskData, loader: Loader, spec: dict[str, Any], device, seed: int
    ) -> MetricDict:
        """Metrics per test protocol: ``{protocol: {metric: value}}`` (fractions in [0, 1])."""
        return {
            name: self.evaluate_protocol(test, data, loader, spec, device, seed)
            for name, test in data.test.items()
        }

    def evaluate_protocol(
        self, test: Any, data: TaskData, loader: Loader, spec: dict[str, Any], device, seed: int
    ) -> MetricDict:
        raise NotImplementedError

    def on_step_end(self, step: int, total_steps: int) -> None:
        """No EMA or momentum schedule when fine-tuning."""

    def optimizer_groups(
        self, weight_decay: float, layer_decay: float | None
    ) -> list[dict[str, Any]]:
        """The optimizer's parameter groups under this task's recipe (see :func:`param_groups`);
        the training engine uses them in place of its own."""
        return param_groups(
            self,
            weight_decay,
            layer_decay,
            rule=self.decay_rule,
            bias_lr_factor=self.bias_lr_factor,
        )


_TASKS: Registry[type[FinetuneTask]] = Registry("downstream task", "tasks")


def register_task(name: str) -> Callable[[type[FinetuneTask]], type[FinetuneTask]]:
    """Class decorator adding a task under ``name``, which must have a card."""

    def wrap(cls: type[FinetuneTask]) -> type[FinetuneTask]:
        task_card(name)
        cls.name = name
        return _TASKS.add(name, cls)

    return wrap


def task_class(name: str) -> type[FinetuneTask]:
    """Look a task up by name; an unknown name is a KeyError naming the known ones."""
    return _TASKS.get(name)


def camera_count(data: TaskData) -> int:
    """1 + the largest camera id of the train, query and gallery records (at least 1), so a
    test camera unseen in training still has an (untrained) SIE row."""
    records = [*data.train]
    for test in data.test.values():
        records += [r for part in test for r in part] if isinstance(test, tuple) else test
    return 1 + max((r.camid for r in records), default=0)


def reid_options(data: TaskData, spec: dict[str, Any]) -> dict[str, Any]:
    """TransReID*'s SIE and JPM settings of a ReID config (both off when unset)."""
    options: dict[str, Any] = {"jpm": spec.get("jpm", False), "shift": spec.get("shift_num", 5)}
    if spec.get("sie", False):
        options |= {"num_cameras": camera_count(data), "sie_coef": spec.get("sie_coef", 3.0)}
    return options


def shuffle_unit(features: torch.Tensor, shift: int, groups: int) -> torch.Tensor:
    """TransReID's jigsaw rearrangement (``shuffle_unit``) of the patch tokens of ``features``.

    ``features`` is (B, 1 + N, D) with the CLS token first; the result is (B, N', D), patch
    tokens only. Shift: the patch tokens from index ``shift - 1`` on, then the first ``shift -
    1`` (TransReID's ``cat([x[:, shift:], x[:, 1:shift]])`` on the tokens with the CLS first).
    Shuffle: viewed as ``groups`` rows, transposed, read out again; when N is not a multiple of
    ``groups`` the second-to-last token is appended once first (N' = N + 1), as TransReID does.
    """
    batch, _, dim = features.shape
    x = torch.cat([features[:, shift:], features[:, 1:shift]], dim=1)
    if x.shape[1] % groups:
        x = torch.cat([x, x[:, -2:-1]], dim=1)
    x = x.view(batch, groups, -1, dim).transpose(1, 2).contiguous()
    return x.view(batch, -1, dim)


def bnneck(dim: int, num_classes: int) -> tuple[nn.BatchNorm1d, nn.Linear]:
    """A BNNeck (BatchNorm1d, bias frozen: no shift before the classifier) and its bias-free
    classifier (normal init, std 0.001)."""
    bn = nn.BatchNorm1d(dim)
    bn.bias.requires_grad_(False)
    classifier = nn.Linear(dim, num_classes, bias=False)
    nn.init.normal_(classifier.weight, std=0.001)
    return bn, classifier


class ReidNet(nn.Module):
    """The ReID network: TransReID's baseline, and with its options TransReID*.

    - ``num_cameras`` (SIE): a learnable (num_cameras, 1, dim) embedding, trunc-normal std 0.02,
      whose row of the image's camera, times ``sie_coef``, is added to every token after the
      position embedding (TransReID adds it before ``pos_drop``; the fine-tuning ViT has no
      dropout there). The camera ids then have to come with the images.
    - ``jpm``: the jigsaw patch module. The last block and final norm stay the global branch; a
      copy of them (same weights at init) is the local branch. The penultimate output's patch
      tokens go through :func:`shuffle_unit` (``shift``, ``shuffle_groups``), are cut into
      ``jpm_groups`` equal parts (a remainder is dropped), and each part, behind that output's
      CLS token, passes the local branch; its CLS is a local feature with its own BNNeck and
      classifier.

    ``forward`` returns (features, logits): tensors without JPM, else lists (global first).
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        num_classes: int,
        *,
        num_cameras: int | None = None,
        sie_coef: float = 3.0,
        jpm: bool = False,
        shift: int = 5,
        shuffle_groups: int = 2,
        jpm_groups: int = 4,
    ):
        super().__init__()
        dim = backbone.embed_dim
        self.backbone = backbone
        self.bottleneck, self.classifier = bnneck(dim, num_classes)
        self.sie_coef = sie_coef
        self.sie_embed: nn.Parameter | None = None
        if num_cameras is not None:
            self.sie_embed = nn.Parameter(torch.zeros(num_cameras, 1, dim))
            nn.init.trunc_normal_(self.sie_embed, std=0.02)
        self.jpm = jpm
        self.shift, self.shuffle_groups, self.jpm_groups = shift, shuffle_groups, jpm_groups
        if jpm:
            if backbone.global_pool != "token":
                raise ValueError("JPM reads the CLS token: it needs pool 'token'")
            self.local_block = copy.deepcopy(backbone.blocks[-1])
            self.local_norm = copy.deepcopy(backbone.norm)
            necks = [bnneck(dim, num_classes) for _ in range(jpm_groups)]
            self.local_bottlenecks = nn.ModuleList(bn for bn, _ in necks)
            self.local_classifiers = nn.ModuleList(fc for _, fc in necks)

    @property
    def uses_camera(self) -> bool:
        return self.sie_embed is not None

    def tokens(self, images: torch.Tensor, camids: torch.Tensor | None) -> torch.Tensor:
        """The token sequence after the embeddings (patches, CLS, position, SIE), before the
        blocks; timm's ``forward_features`` up to the blocks."""
        vit = self.backbone
        x = vit._pos_embed(vit.patch_embed(images))
        if self.sie_embed is not None:
            if camids is None:
                raise ValueError("SIE needs the camera id of every image")
            x = x + self.sie_coef * self.sie_embed[camids]
        return vit.norm_pre(vit.patch_drop(x))

    def global_feature(self, images: torch.Tensor, camids: torch.Tensor | None) -> torch.Tensor:
        if self.sie_embed is None:
            return cls_feature(self.backbone, images)
        vit = self.backbone
        return vit.forward_head(vit.norm(vit.blocks(self.tokens(images, camids))), pre_logits=True)

    def jpm_features(self, images: torch.Tensor, camids: torch.Tensor | None) -> list[torch.Tensor]:
        """[global, local_1, ..., local_G]: the CLS features of both branches."""
        vit = self.backbone
        x = self.tokens(images, camids)
        for block in vit.blocks[:-1]:
            x = block(x)
        features = [vit.norm(vit.blocks[-1](x))[:, 0]]
        length = (x.shape[1] - 1) // self.jpm_groups
        patches = shuffle_unit(x, self.shift, self.shuffle_groups)
        token = x[:, :1]
        for i in range(self.jpm_groups):
            part = torch.cat([token, patches[:, i * length : (i + 1) * length]], dim=1)
            features.append(self.local_norm(self.local_block(part))[:, 0])
        return features

    def forward(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> tuple[Any, Any]:
        if not self.jpm:
            feature = self.global_feature(images, camids)
            return feature, self.classifier(self.bottleneck(feature))
        features = self.jpm_features(images, camids)
        bns = [self.bottleneck, *self.local_bottlenecks]
        heads = [self.classifier, *self.local_classifiers]
        logits = [fc(bn(f)) for f, bn, fc in zip(features, bns, heads, strict=True)]
        return features, logits

    @torch.no_grad()
    def test_feature(
        self, images: torch.Tensor, camids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Before the BNNecks; with JPM TransReID's concat(global, local_1/G, ..., local_G/G)
        (G = 4; ``NECK_FEAT: before``)."""
        if not self.jpm:
            return self.global_feature(images, camids)
        features = self.jpm_features(images, camids)
        return torch.cat([features[0], *(f / self.jpm_groups for f in features[1:])], dim=1)


@register_task("reid")
class ReidTask(FinetuneTask):
    """ReID: cross-entropy on the logits plus ``triplet_weight`` × batch-hard triplet on the
    features before the BNNeck. With JPM each term is TransReID's 0.5 × global + 0.5 × the mean
    over the local branches. It tests in fp32, as TransReID."""

    strided = True
    test_autocast = False

    @classmethod
    def read_data(cls, fmt: str, root: str | Path, spec: dict[str, Any]) -> TaskData:
        return reid_data(fmt, root)

    @classmethod
    def build(cls, backbone: VisionTransformer, data: TaskData, spec: dict[str, Any]):
        return cls(
            backbone,
            data.num_classes["ids"],
            label_smoothing=spec["label_smoothing"],
            triplet_margin=spec["triplet_margin"],
            **reid_options(data, spec),
        )

    def evaluate_protocol(
        self, test: Any, data: TaskData, loader: Loader, spec: dict[str, Any], device, seed: int
    ) -> MetricDict:
        return evaluate_reid(self, test, loader, spec, seed, device)

    def __init__(
        self,
        backbone: VisionTransformer,
        num_classes: int,
        *,
        label_smoothing: float,
        triplet_margin: float | None,
        triplet_weight: float = 1.0,
        **options: Any,
    ):
        super().__init__()
        self.model = ReidNet(backbone, num_classes, **options)
        self.uses_camera = self.model.uses_camera
        self.label_smoothing = label_smoothing
        self.triplet_margin = triplet_margin
        self.triplet_weight = triplet_weight

    def id_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        labels = batch["label"]
        camids = batch.get("camid") if self.uses_camera else None
        feature, logits = self.model(batch["image"], camids)
        if not self.model.jpm:
            ce = self.id_loss(logits, labels)
            triplet = batch_hard_triplet(feature, labels, self.triplet_margin)
        else:
            ce = (
                0.5 * self.id_loss(logits[0], labels)
                + 0.5 * torch.stack([self.id_loss(x, labels) for x in logits[1:]]).mean()
            )
            triplet = 0.5 * batch_hard_triplet(feature[0], labels, self.triplet_margin)
            triplet = (
                triplet
                + 0.5
                * torch.stack(
                    [batch_hard_triplet(f, labels, self.triplet_margin) for f in feature[1:]]
                ).mean()
            )
            logits = logits[0]
        accuracy = (logits.argmax(1) == labels).float().mean()
        return {
            "loss": ce + self.triplet_weight * triplet,
            "ce": ce,
            "triplet": triplet,
            "acc": accuracy,
        }

    @torch.no_grad()
    def predict(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        """The test feature: before the BNNeck(s) (L2-normalised by the distance)."""
        return self.model.test_feature(images, camids)


class AttributeNet(nn.Module):
    def __init__(self, backbone: VisionTransformer, num_colors: int, num_types: int):
        super().__init__()
        self.backbone = backbone
        self.color_head = nn.Linear(backbone.embed_dim, num_colors)
        self.type_head = nn.Linear(backbone.embed_dim, num_types)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feature = cls_feature(self.backbone, images)
        return {"color": self.color_head(feature), "type": self.type_head(feature)}


@register_task("var")
class AttributeTask(FinetuneTask):
    """VAR: colour and type; the loss is the sum of both cross-entropies."""

    attributes = ("color", "type")
    head_names = ("color_head", "type_head")
    rand_augment = True

    @classmethod
    def read_data(cls, fmt: str, root: str | Path, spec: dict[str, Any]) -> TaskData:
        return var_data(root)

    @classmethod
    def build(cls, backbone: VisionTransformer, data: TaskData, spec: dict[str, Any]):
        return cls(backbone, data.num_classes["color"], data.num_classes["type"])

    def evaluate_protocol(
        self, test: Any, data: TaskData, loader: Loader, spec: dict[str, Any], device, seed: int
    ) -> MetricDict:
        return evaluate_attributes(self, test, loader, self.attributes, device)

    def __init__(self, backbone: VisionTransformer, num_colors: int, num_types: int):
        super().__init__()
        self.model = AttributeNet(backbone, num_colors, num_types)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = self.model(batch["image"])
        terms = {
            name: F.cross_entropy(logits[name].float(), batch[name], ignore_index=-1)
            for name in self.attributes
        }
        return {"loss": sum(terms.values()), **terms}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(images)


class ClassifierNet(nn.Module):
    def __init__(self, backbone: VisionTransformer, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(cls_feature(self.backbone, images))


@register_task("vfr")
class ClassifyTask(FinetuneTask):
    """VFR: fine-grained make/model classification.

    With ``mixup`` or ``cutmix`` (the Beta α of each; MAE: 0.8 and 1.0) every training batch is
    mixed by timm's ``Mixup`` (one of the two per batch, at random), with ``label_smoothing``
    folded into the soft targets, and the loss is the soft-target cross-entropy, as MAE's
    ``main_finetune.py``. Without them the loss is the plain cross-entropy.
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        num_classes: int,
        *,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.model = ClassifierNet(backbone, num_classes)
        self.mixup = None
        if mixup > 0 or cutmix > 0:
            self.mixup = Mixup(
                mixup_alpha=mixup,
                cutmix_alpha=cutmix,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )

    head_names = ("head",)
    rand_augment = True

    @classmethod
    def read_data(cls, fmt: str, root: str | Path, spec: dict[str, Any]) -> TaskData:
        return vfr_data(root)

    @classmethod
    def build(cls, backbone: VisionTransformer, data: TaskData, spec: dict[str, Any]):
        mixed = spec.get("mixup", 0) > 0 or spec.get("cutmix", 0) > 0
        if mixed and spec["batch_size"] % 2:
            raise ValueError(
                f"finetune.vfr.batch_size={spec['batch_size']}: mixup and cutmix pair each "
                "image with another of the batch, so the batch size must be even"
            )
        return cls(
            backbone,
            data.num_classes["classes"],
            mixup=spec.get("mixup", 0.0),
            cutmix=spec.get("cutmix", 0.0),
            label_smoothing=spec["label_smoothing"] if mixed else 0.0,
        )

    def evaluate_protocol(
        self, test: Any, data: TaskData, loader: Loader, spec: dict[str, Any], device, seed: int
    ) -> MetricDict:
        return evaluate_top1(self, test, loader, device)

    def mix(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The training batch after mixup/cutmix, with soft targets; unchanged without them."""
        if self.mixup is None:
            return images, labels
        return self.mixup(images, labels)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images, targets = self.mix(batch["image"], batch["label"])
        logits = self.model(images)
        if self.mixup is None:
            loss = F.cross_entropy(logits.float(), targets)
        else:
            loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        return {"loss": loss, "acc": (logits.argmax(1) == batch["label"]).float().mean()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def conv_bn_relu(in_dim: int, out_dim: int, kernel: int) -> nn.Sequential:
    """mmseg's ConvModule: conv (no bias), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_dim),
        nn.ReLU(inplace=True),
    )


def feature_blocks(depth: int) -> list[int]:
    """The 4 blocks a segmentation head reads, evenly spaced and ending at the last: ViT-B's
    12 give 2, 5, 8, 11 (BEiT's and MAE's ADE20K configs read 3, 5, 7, 11). A ViT of fewer
    than 4 blocks feeds some blocks to two levels."""
    return [max(depth * (i + 1) // 4 - 1, 0) for i in range(4)]


PYRAMID_STRIDES = (4, 8, 16, 32)  # UperNet's levels, in image pixels


def pyramid_level(dim: int, patch: int, stride: int) -> nn.Module:
    """The layer that brings a ViT's token grid (stride ``patch``) to ``stride``: 2× transposed
    convs (with BatchNorm and GELU between two, as MAE's segmentation), max-pooling, or none.
    A patch of 16 gives MAE's four (two up, one up, none, pool); a patch of 8 one up, none and
    two pools. The ratio must be a power of two."""
    ratio = max(patch, stride) // min(patch, stride)
    if max(patch, stride) % min(patch, stride) or ratio & (ratio - 1):
        raise ValueError(f"patch size {patch} cannot make a level at stride {stride}")
    if stride >= patch:
        return nn.MaxPool2d(ratio, ratio) if ratio > 1 else nn.Identity()
    layers: list[nn.Module] = [nn.ConvTranspose2d(dim, dim, 2, stride=2)]
    for _ in range(ratio.bit_length() - 2):
        layers += [nn.BatchNorm2d(dim), nn.GELU(), nn.ConvTranspose2d(dim, dim, 2, stride=2)]
    return nn.Sequential(*layers) if len(layers) > 1 else layers[0]


class SegmenterNet(nn.Module):
    """UperNet over a plain ViT, as MAE's and BEiT's ADE20K fine-tuning.

    The patch-token grids of 4 blocks (:func:`feature_blocks`) become a pyramid at strides
    4, 8, 16 and 32 of the image (:func:`pyramid_level`). UperNet's
    head fuses it: a pyramid pooling module (scales 1, 2, 3, 6) on the coarsest level, a
    top-down FPN, every level upsampled to stride 4, concatenated, and a 3×3 conv, dropout 0.1
    and a 1×1 conv to the classes; logits are upsampled bilinearly to the image. The
    auxiliary FCN head of mmseg's config (loss weight 0.4) is left out.
    """

    def __init__(self, backbone: VisionTransformer, num_classes: int, channels: int):
        super().__init__()
        dim = backbone.embed_dim
        self.backbone = backbone
        self.blocks = feature_blocks(len(backbone.blocks))
        patch = backbone.patch_embed.patch_size[0]
        self.pyramid = nn.ModuleList(pyramid_level(dim, patch, s) for s in PYRAMID_STRIDES)
        self.pool_scales = (1, 2, 3, 6)
        self.ppm = nn.ModuleList(conv_bn_relu(dim, channels, 1) for _ in self.pool_scales)
        self.ppm_fuse = conv_bn_relu(dim + len(self.pool_scales) * channels, channels, 3)
        self.lateral = nn.ModuleList(conv_bn_relu(dim, channels, 1) for _ in range(3))
        self.fpn = nn.ModuleList(conv_bn_relu(channels, channels, 3) for _ in range(3))
        self.fuse = conv_bn_relu(4 * channels, channels, 3)
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The 4-level pyramid, finest first."""
        blocks = sorted(set(self.blocks))
        grids = self.backbone.forward_intermediates(
            images, indices=blocks, output_fmt="NCHW", intermediates_only=True
        )
        by_block = dict(zip(blocks, grids, strict=True))
        return [level(by_block[b]) for level, b in zip(self.pyramid, self.blocks, strict=True)]

    def pyramid_pooling(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(conv(F.adaptive_avg_pool2d(x, scale)), size=size, mode="bilinear")
            for scale, conv in zip(self.pool_scales, self.ppm, strict=True)
        ]
        return self.ppm_fuse(torch.cat([x, *pooled], dim=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        levels = self.features(images)
        maps = [lateral(x) for lateral, x in zip(self.lateral, levels[:3], strict=True)]
        maps.append(self.pyramid_pooling(levels[3]))
        for i in range(3, 0, -1):  # top-down: each level gets the coarser one, upsampled
            maps[i - 1] = maps[i - 1] + F.interpolate(
                maps[i], size=maps[i - 1].shape[-2:], mode="bilinear"
            )
        size = maps[0].shape[-2:]
        outs = [conv(x) for conv, x in zip(self.fpn, maps[:3], strict=True)] + [maps[3]]
        outs = [outs[0]] + [F.interpolate(x, size=size, mode="bilinear") for x in outs[1:]]
        logits = self.classifier(self.dropout(self.fuse(torch.cat(outs, dim=1))))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


@register_task("vps")
class SegmentTask(FinetuneTask):
    """VPS: per-pixel part classes, 255 ignored."""

    @classmethod
    def read_data(cls, fmt: str, root: str | Path, spec: dict[str, Any]) -> TaskData:
        return vps_data(root, spec.get("num_classes"))

    @classmethod
    def build(cls, backbone: VisionTransformer, data: TaskData, spec: dict[str, Any]):
        channels = spec.get("head_channels", UPERNET_CHANNELS)
        return cls(backbone, data.num_classes["classes"], channels)

    @classmethod
    def train_set(cls, records: list[Any], size: tuple[int, int], spec: dict[str, Any]) -> Dataset:
        augment = SegmentationTransform(size, True, pad=spec["pad"], erasing=spec["erasing"])
        return SegmentationDataset(records, augment)

    @classmethod
    def test_set(cls, records: list[Any], size: tuple[int, int], spec: dict[str, Any]) -> Dataset:
        return SegmentationDataset(records, SegmentationTransform(size, train=False))

    def evaluate_protocol(
        self, test: Any, data: TaskData, loader: Loader, spec: dict[str, Any], device, seed: int
    ) -> MetricDict:
        return evaluate_segmentation(self, test, loader, data.num_classes["classes"], device)

    def __init__(self, backbone: VisionTransformer, num_classes: int, channels: int):
        super().__init__()
        self.model = SegmenterNet(backbone, num_classes, channels)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = self.model(batch["image"])
        loss = F.cross_entropy(logits.float(), batch["mask"], ignore_index=SEG_IGNORE)
        return {"loss": loss}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)
