"""TransReID*'s options on the ReID task: overlapping patches, SIE and JPM (all off by default)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from cgdmae.finetune.backbone import load_vit, set_patch_stride, strided_grid
from cgdmae.finetune.data import TaskData
from cgdmae.finetune.run import build_task
from cgdmae.finetune.tasks import (
    ReidNet,
    ReidTask,
    batch_hard_triplet,
    camera_count,
    cls_feature,
    param_groups,
    reid_options,
    shuffle_unit,
)
from cgdmae.models import create_mae, save_encoder

DIM, CLASSES = 32, 5
MODEL = {
    "size": "tiny",
    "embed_dim": DIM,
    "depth": 2,
    "num_heads": 2,
    "img_size": [32, 32],
    "patch_size": 8,
}
SPEC = {"label_smoothing": 0.1, "triplet_margin": None}  # the reid keys build_task reads


def tiny_vit(stride=None, depth=2):
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=DIM, depth=depth, num_heads=2, num_classes=0
    )
    if stride is not None:
        set_patch_stride(vit, stride)
    return vit


def batch(n=8, cameras=3):
    generator = torch.Generator().manual_seed(1)
    return {
        "image": torch.randn(n, 3, 32, 32, generator=generator),
        "label": torch.arange(n) // 2 % CLASSES,
        "camid": torch.arange(n) % cameras,
    }


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    torch.manual_seed(0)
    mae = create_mae(
        "tiny",
        img_size=(32, 32),
        patch_size=8,
        embed_dim=DIM,
        depth=2,
        num_heads=2,
        decoder_dim=16,
        decoder_depth=1,
        decoder_heads=2,
    )
    path = tmp_path_factory.mktemp("enc") / "encoder.pth"
    save_encoder(mae, path)
    return path


# ---- overlapping patches ------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "grid"), [((32, 32), (5, 5)), ((32, 24), (5, 3))])
def test_patch_stride_gives_the_overlapping_grid_and_resampled_pos_embed(encoder, size, grid):
    vit = load_vit(encoder, MODEL, size, patch_stride=6)
    assert strided_grid(size, 8, 6) == grid  # ((H - 8) // 6 + 1, (W - 8) // 6 + 1)
    assert vit.patch_embed.proj.kernel_size == (8, 8) and vit.patch_embed.proj.stride == (6, 6)
    assert vit.patch_embed.grid_size == grid and vit.patch_embed.num_patches == grid[0] * grid[1]
    tokens = 1 + grid[0] * grid[1]
    assert vit.pos_embed.shape == (1, tokens, DIM)
    state = torch.load(encoder, weights_only=True)
    stored = state.get("model", state)["pos_embed"]
    expected = resample_abs_pos_embed(stored, new_size=list(grid), old_size=[4, 4])
    torch.testing.assert_close(vit.pos_embed.data, expected)
    assert vit.forward_features(torch.randn(2, 3, *size)).shape == (2, tokens, DIM)


def test_patch_stride_equal_to_the_patch_changes_nothing(encoder):
    plain = load_vit(encoder, MODEL, (32, 32))
    same = load_vit(encoder, MODEL, (32, 32), patch_stride=8)
    for (name, a), (_, b) in zip(
        plain.state_dict().items(), same.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert same.patch_embed.grid_size == (4, 4)


def test_patch_stride_beyond_the_patch_is_refused():
    with pytest.raises(ValueError, match="stride 9"):
        tiny_vit(stride=9)


# ---- SIE ----------------------------------------------------------------------------------------
def test_sie_separates_cameras_and_is_off_by_default():
    images = batch()["image"][:1].repeat(2, 1, 1, 1)
    cams = torch.tensor([0, 2])
    net = ReidNet(tiny_vit(), CLASSES, num_cameras=3).eval()
    assert net.sie_embed.shape == (3, 1, DIM)
    assert 0.005 < net.sie_embed.std() < 0.05  # trunc-normal, std 0.02
    feature = net.test_feature(images, cams)
    assert not torch.allclose(feature[0], feature[1])
    assert torch.equal(net.test_feature(images, torch.tensor([2, 2]))[0], feature[1])
    with pytest.raises(ValueError, match="camera id"):
        net.test_feature(images)

    plain = ReidNet(tiny_vit(), CLASSES).eval()
    assert plain.sie_embed is None and not plain.uses_camera
    assert torch.equal(plain.test_feature(images, cams), plain.test_feature(images))
    out = plain.test_feature(images, cams)
    assert torch.equal(out[0], out[1])


def test_sie_adds_coef_times_the_camera_row_after_the_position_embedding():
    images = batch()["image"][:2]
    cams = torch.tensor([1, 0])
    net = ReidNet(tiny_vit(), CLASSES, num_cameras=2, sie_coef=3.0).eval()
    vit = net.backbone
    tokens = vit._pos_embed(vit.patch_embed(images)) + 3.0 * net.sie_embed[cams]
    torch.testing.assert_close(net.tokens(images, cams), tokens)
    # with a zero coefficient the token path is timm's own forward
    net.sie_coef = 0.0
    torch.testing.assert_close(net.test_feature(images, cams), cls_feature(vit, images))


def test_sie_camera_count_covers_train_and_test_records():
    class R:
        def __init__(self, camid):
            self.camid = camid

    data = TaskData([R(0), R(3)], {"test": ([R(1)], [R(7)])}, {"ids": 2})
    assert camera_count(data) == 8
    assert camera_count(TaskData([], {}, {"ids": 1})) == 1
    assert reid_options(data, {}) == {"jpm": False, "shift": 5}
    assert reid_options(data, {"sie": True, "sie_coef": 1.5})["num_cameras"] == 8


# ---- JPM ----------------------------------------------------------------------------------------
def test_shuffle_unit_shifts_then_transposes_the_groups():
    n = 25  # odd: the second-to-last token is repeated once before the group transpose
    features = torch.arange(n + 1, dtype=torch.float32)[None, :, None]  # CLS = 0, patches 1..25
    out = shuffle_unit(features, shift=5, groups=2)[0, :, 0].tolist()
    shifted = list(range(5, n + 1)) + list(range(1, 5))  # TransReID: x[:, 5:] then x[:, 1:5]
    shifted.append(shifted[-2])
    half = len(shifted) // 2
    expected = [t for pair in zip(shifted[:half], shifted[half:], strict=True) for t in pair]
    assert out == expected and len(out) == 26
    even = shuffle_unit(torch.arange(17.0)[None, :, None], shift=1, groups=2)[0, :, 0].tolist()
    assert even == [1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 8, 16]


def test_jpm_shapes_in_training_and_the_test_feature():
    net = ReidNet(tiny_vit(stride=6), CLASSES, jpm=True)
    images = batch()["image"]
    features, logits = net(images)
    assert len(features) == len(logits) == 5
    assert all(f.shape == (8, DIM) for f in features)
    assert all(x.shape == (8, CLASSES) for x in logits)
    # the local branch starts as a copy of the last block and the final norm
    for a, b in zip(
        net.local_block.parameters(), net.backbone.blocks[-1].parameters(), strict=True
    ):
        assert torch.equal(a, b) and a is not b
    assert len({id(m) for m in (*net.local_bottlenecks, net.bottleneck)}) == 5
    assert all(not bn.bias.requires_grad for bn in net.local_bottlenecks)

    net.eval()
    test = net.test_feature(images)
    assert test.shape == (8, 5 * DIM)
    features = net.jpm_features(images, None)
    torch.testing.assert_close(test[:, :DIM], cls_feature(net.backbone, images))
    torch.testing.assert_close(test[:, DIM:], torch.cat(features[1:], 1) / 4)


def test_jpm_needs_the_cls_token():
    vit = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=DIM, depth=2, num_heads=2, num_classes=0,
        global_pool="avg",
    )  # fmt: skip
    with pytest.raises(ValueError, match="pool 'token'"):
        ReidNet(vit, CLASSES, jpm=True)


@pytest.mark.parametrize("margin", [None, 0.3])
def test_jpm_loss_is_half_global_half_the_local_mean(margin):
    task = ReidTask(
        tiny_vit(), CLASSES, label_smoothing=0.1, triplet_margin=margin, triplet_weight=1.0,
        jpm=True, num_cameras=3,
    )  # fmt: skip
    data = batch()
    out = task(data)
    features, logits = task.model(data["image"], data["camid"])  # train mode: batch statistics
    labels = data["label"]

    def ce(x):
        return F.cross_entropy(x, labels, label_smoothing=0.1)

    def tri(f):
        return batch_hard_triplet(f, labels, margin)

    id_loss = 0.5 * ce(logits[0]) + 0.5 * sum(ce(x) for x in logits[1:]) / 4
    triplet = 0.5 * tri(features[0]) + 0.5 * sum(tri(f) for f in features[1:]) / 4
    torch.testing.assert_close(out["ce"], id_loss)
    torch.testing.assert_close(out["triplet"], triplet)
    torch.testing.assert_close(out["loss"], id_loss + triplet)
    assert out["acc"] == (logits[0].argmax(1) == labels).float().mean()
    out["loss"].backward()
    assert task.model.sie_embed.grad is not None and task.model.local_block is not None
    assert all(fc.weight.grad is not None for fc in task.model.local_classifiers)


def test_sie_and_jpm_parameters_get_their_layers_rate_and_decay():
    task = ReidTask(tiny_vit(depth=3), CLASSES, label_smoothing=0.0, triplet_margin=None,
                    jpm=True, num_cameras=2)  # fmt: skip
    groups = param_groups(task, 0.05, 0.5)
    where = {id(p): g for g in groups for p in g["params"]}
    named = dict(task.named_parameters())
    # layer ids: sie_embed 0 (with pos_embed), local block = last block's (3), local norm = 4
    assert where[id(named["model.sie_embed"])] is where[id(named["model.backbone.pos_embed"])]
    assert where[id(named["model.sie_embed"])]["weight_decay"] == 0
    local, last = "model.local_block.mlp.fc1.weight", "model.backbone.blocks.2.mlp.fc1.weight"
    assert where[id(named[local])] is where[id(named[last])]
    assert where[id(named["model.local_norm.weight"])]["lr_scale"] == 1.0
    assert where[id(named["model.local_classifiers.0.weight"])]["lr_scale"] == 1.0


# ---- defaults -----------------------------------------------------------------------------------
def test_defaults_off_keep_the_baseline_bit_for_bit():
    """build_task without the new keys is the plain baseline: same parameters drawn in the same
    order, same loss, same test feature as the head written out by hand."""
    data = batch()
    task = build_task("reid", TaskData([], {}, {"ids": CLASSES}), SPEC, tiny_vit())
    assert not task.uses_camera and not task.model.jpm and task.model.sie_embed is None

    vit = tiny_vit()
    bn = nn.BatchNorm1d(DIM)
    bn.bias.requires_grad_(False)
    classifier = nn.Linear(DIM, CLASSES, bias=False)
    nn.init.normal_(classifier.weight, std=0.001)
    reference = {f"backbone.{k}": v for k, v in vit.state_dict().items()}
    reference |= {f"bottleneck.{k}": v for k, v in bn.state_dict().items()}
    reference |= {"classifier.weight": classifier.weight}
    state = task.model.state_dict()
    assert list(state) == list(reference)
    assert all(torch.equal(state[k], reference[k]) for k in state)

    out = task(data)
    feature = cls_feature(vit, data["image"])
    logits = classifier(bn(feature))
    ce = F.cross_entropy(logits, data["label"], label_smoothing=0.1)
    triplet = batch_hard_triplet(feature, data["label"], None)
    assert torch.equal(out["loss"], ce + triplet) and torch.equal(out["ce"], ce)
    task.eval()
    vit.eval()
    assert torch.equal(task.predict(data["image"]), cls_feature(vit, data["image"]))


def test_options_are_optional_schema_keys_and_sie_can_be_off_per_dataset():
    from pathlib import Path

    from cgdmae.config import validate_config
    from cgdmae.finetune.spec import dataset_spec

    schema = Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml"
    options = {"stride": 12, "sie": True, "sie_coef": 3.0, "jpm": True, "shift_num": 8}
    config = {"finetune": {"reid": {**options, "per_dataset": {"vehicleid": {"sie": False}}}}}
    validate_config(config, schema)
    reid = config["finetune"]["reid"]
    assert dataset_spec(reid, "veri776").items() >= options.items()
    assert dataset_spec(reid, "vehicleid")["sie"] is False
    plain = {"finetune": {"reid": {}}}
    validate_config(plain, schema)
    assert not set(options) & set(plain["finetune"]["reid"])  # no defaults: specs unchanged


def _variant_config(**variant):
    return {
        "datasets": {
            "veri776": {"format": "veri776", "path": "v"},
            "vfr": {"format": "image_folder", "path": "f"},
            "pool": {"format": "pool", "path": "p"},
        },
        "runs": {"mae": {"method": "mae"}},
        "finetune": {
            "reid": {
                "datasets": ["veri776"],
                "epochs": 10,
                "warmup_epochs": 2,
                "lr": 0.008,
                "variants": {"transreid_star": variant},
            }
        },
    }


def test_a_variant_is_its_own_recipe_beside_the_plain_one(tmp_path):
    """finetune.reid.variants.transreid_star: its own job and column, with its settings laid
    over the task's; the plain recipe's spec does not change."""
    import yaml

    from cgdmae.config import finetune_jobs, finetune_spec, load_config
    from cgdmae.report.tables import columns_for

    schema = Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml"
    settings = {"stride": 12, "sie": True, "jpm": True, "shift_num": 8, "lr": 0.01}
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(_variant_config(datasets=["veri776"], settings=settings)))
    config = load_config(config_file, schema)
    jobs = finetune_jobs(config, ["mae"])
    assert jobs == [("mae", "reid", "veri776"), ("mae", "reid-transreid_star", "veri776")]
    plain = finetune_spec(config, "reid", "veri776")
    star = finetune_spec(config, "reid-transreid_star", "veri776")
    assert star == plain | settings and "stride" not in plain and "variants" not in plain
    labels = [
        c.label for c in columns_for([("reid", "veri776"), ("reid-transreid_star", "veri776")])
    ]
    assert labels == ["VeRi-776 mAP", "VeRi-776 R1", "VeRi-776 transreid_star mAP",
                      "VeRi-776 transreid_star R1"]  # fmt: skip


@pytest.mark.parametrize(
    "variant, key",
    [
        ({"datasets": ["vfr"], "settings": {}}, "finetune.reid.variants.transreid_star.datasets.0"),
        (
            {"datasets": ["nope"], "settings": {}},
            "finetune.reid.variants.transreid_star.datasets.0",
        ),
        (
            {"datasets": ["veri776"], "settings": {"epochs": 2}},
            "finetune.reid.variants.transreid_star.settings.warmup_epochs",
        ),
        ({"datasets": ["veri776"], "settings": {"strides": 12}}, "strides"),
    ],
)
def test_a_bad_variant_names_its_key(tmp_path, variant, key):
    import yaml

    from cgdmae.config import ConfigError, load_config

    schema = Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml"
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(_variant_config(**variant)))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(config_file, schema)


def test_an_ablation_may_show_a_variants_column_and_an_unknown_task_is_named(tmp_path):
    import yaml

    from cgdmae.config import ConfigError, finetune_jobs, load_config

    schema = Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml"
    config = _variant_config(datasets=["veri776"], settings={"stride": 12})
    config["ablations"] = {
        "mask": {
            "base": "mae",
            "axis": "mask_ratio",
            "values": [0.75, 0.5],
            "tasks": ["reid-transreid_star/veri776"],
        }  # fmt: skip
    }
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(config))
    loaded = load_config(config_file, schema)
    added = [job for job in finetune_jobs(loaded, ["mae", "mae@mask_ratio=0.5"]) if "@" in job[0]]
    assert added == [("mae@mask_ratio=0.5", "reid-transreid_star", "veri776")]
    config["ablations"]["mask"]["tasks"] = ["reidd/veri776"]
    config_file.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"ablations\.mask\.tasks\.0.*'reidd/veri776'"):
        load_config(config_file, schema)
