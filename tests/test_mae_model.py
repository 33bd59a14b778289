"""Parity with facebookresearch/mae: keys and shapes, init, sin-cos table, masking and loss.

The reference below is a plain-torch MAE forward computed from a state dict alone (manual
attention, MLP and layer norm), written independently of the model code.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from cgdmae.models import (
    create_mae,
    mae_vit_huge_patch14,
    mae_vit_tiny_patch16,
    sincos_pos_embed_2d,
)

MAE_ENCODER_BLOCK_KEYS = [
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
    "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
    "mlp.fc2.weight", "mlp.fc2.bias",
]  # fmt: skip


def published_base_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of a mae_vit_base_patch16 pre-training checkpoint (ckpt['model'])."""
    d, dd, p = 768, 512, 16
    shapes = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, 197, d),
        "patch_embed.proj.weight": (d, 3, p, p),
        "patch_embed.proj.bias": (d,),
        "norm.weight": (d,),
        "norm.bias": (d,),
        "mask_token": (1, 1, dd),
        "decoder_pos_embed": (1, 197, dd),
        "decoder_embed.weight": (dd, d),
        "decoder_embed.bias": (dd,),
        "decoder_norm.weight": (dd,),
        "decoder_norm.bias": (dd,),
        "decoder_pred.weight": (p * p * 3, dd),
        "decoder_pred.bias": (p * p * 3,),
    }
    for prefix, width, depth in (("blocks", d, 12), ("decoder_blocks", dd, 8)):
        for i in range(depth):
            block = {
                "norm1.weight": (width,), "norm1.bias": (width,),
                "attn.qkv.weight": (3 * width, width), "attn.qkv.bias": (3 * width,),
                "attn.proj.weight": (width, width), "attn.proj.bias": (width,),
                "norm2.weight": (width,), "norm2.bias": (width,),
                "mlp.fc1.weight": (4 * width, width), "mlp.fc1.bias": (4 * width,),
                "mlp.fc2.weight": (width, 4 * width), "mlp.fc2.bias": (width,),
            }  # fmt: skip
            shapes.update({f"{prefix}.{i}.{k}": v for k, v in block.items()})
    return shapes


def test_base_state_dict_matches_published_layout_and_loads_strict():
    model = create_mae("base")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == published_base_shapes()
    torch.manual_seed(0)
    fake_checkpoint = {"model": {k: torch.randn(s) for k, s in published_base_shapes().items()}}
    model.load_state_dict(fake_checkpoint["model"], strict=True)
    assert torch.equal(
        model.blocks[3].attn.qkv.weight, fake_checkpoint["model"]["blocks.3.attn.qkv.weight"]
    )


def test_sincos_table_matches_hand_computed_entries():
    table = sincos_pos_embed_2d(8, (2, 3), cls_token=True)[0]
    assert table.shape == (7, 8) and torch.all(table[0] == 0)
    # patch index 5 = row 1, col 2; first half encodes the column, omega = [1, 1/100]
    row, col = 1.0, 2.0
    expected = [math.sin(col), math.sin(col / 100), math.cos(col), math.cos(col / 100),
                math.sin(row), math.sin(row / 100), math.cos(row), math.cos(row / 100)]  # fmt: skip
    assert torch.allclose(table[1 + 5], torch.tensor(expected), atol=1e-6)


def test_init_follows_mae():
    torch.manual_seed(0)
    model = create_mae(
        "small", img_size=64, patch_size=8, decoder_dim=128, decoder_depth=2, decoder_heads=4
    )
    fc1 = model.blocks[0].mlp.fc1.weight
    bound = math.sqrt(6 / (fc1.shape[0] + fc1.shape[1]))  # xavier uniform
    assert fc1.abs().max() <= bound and fc1.abs().max() > 0.9 * bound
    conv = model.patch_embed.proj.weight
    conv_bound = math.sqrt(6 / (conv.shape[0] + conv[0].numel()))
    assert conv.abs().max() <= conv_bound and conv.abs().max() > 0.9 * conv_bound
    assert abs(model.cls_token.std().item() - 0.02) < 0.01
    assert torch.all(model.blocks[0].attn.qkv.bias == 0)
    assert torch.all(model.norm.weight == 1) and model.norm.eps == 1e-6
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad


# ---- an independent functional MAE ---------------------------------------------------------------
def ref_block(x, sd, prefix, heads):
    def ln(t, name):
        return F.layer_norm(
            t, t.shape[-1:], sd[f"{prefix}.{name}.weight"], sd[f"{prefix}.{name}.bias"], 1e-6
        )

    b, n, d = x.shape
    h = ln(x, "norm1")
    qkv = h @ sd[f"{prefix}.attn.qkv.weight"].T + sd[f"{prefix}.attn.qkv.bias"]
    q, k, v = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) / math.sqrt(d // heads)).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(b, n, d)
    x = x + out @ sd[f"{prefix}.attn.proj.weight"].T + sd[f"{prefix}.attn.proj.bias"]
    h = ln(x, "norm2")
    h = F.gelu(h @ sd[f"{prefix}.mlp.fc1.weight"].T + sd[f"{prefix}.mlp.fc1.bias"])
    return x + h @ sd[f"{prefix}.mlp.fc2.weight"].T + sd[f"{prefix}.mlp.fc2.bias"]


def reference_mae(sd, imgs, noise, mask_ratio, p, heads, dec_heads, depth, dec_depth, norm_pix):
    b, c, hh, ww = imgs.shape
    gh, gw = hh // p, ww // p
    length = gh * gw
    patches = (
        imgs.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(b, length, p * p * c)
    )
    x = F.conv2d(imgs, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p)
    x = x.flatten(2).transpose(1, 2) + sd["pos_embed"][:, 1:]
    keep = int(length * (1 - mask_ratio))
    order = noise.argsort(dim=1)
    visible = order[:, :keep]
    x = torch.stack([x[i, visible[i]] for i in range(b)])
    mask = torch.ones(b, length)
    for i in range(b):
        mask[i, visible[i]] = 0
    x = torch.cat([(sd["cls_token"] + sd["pos_embed"][:, :1]).expand(b, -1, -1), x], 1)
    for i in range(depth):
        x = ref_block(x, sd, f"blocks.{i}", heads)
    x = F.layer_norm(x, x.shape[-1:], sd["norm.weight"], sd["norm.bias"], 1e-6)
    y = x @ sd["decoder_embed.weight"].T + sd["decoder_embed.bias"]
    full = sd["mask_token"].expand(b, length, -1).clone()
    for i in range(b):
        full[i, visible[i]] = y[i, 1:]
    y = torch.cat([y[:, :1], full], 1) + sd["decoder_pos_embed"]
    for i in range(dec_depth):
        y = ref_block(y, sd, f"decoder_blocks.{i}", dec_heads)
    y = F.layer_norm(y, y.shape[-1:], sd["decoder_norm.weight"], sd["decoder_norm.bias"], 1e-6)
    pred = (y @ sd["decoder_pred.weight"].T + sd["decoder_pred.bias"])[:, 1:]
    target = patches
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (
            target.var(-1, keepdim=True) + 1e-6
        ).sqrt()
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum(), pred, mask


@pytest.mark.parametrize("norm_pix", [False, True])
@pytest.mark.parametrize("img_size,patch", [((32, 32), 8), ((48, 24), 8), ((28, 28), 14)])
def test_loss_pred_mask_equal_the_reference(norm_pix, img_size, patch):
    torch.manual_seed(0)
    kw = dict(img_size=img_size, patch_size=patch, embed_dim=64, depth=2, num_heads=4)
    model = create_mae(
        "tiny", decoder_dim=32, decoder_depth=2, decoder_heads=2, norm_pix_loss=norm_pix, **kw
    )
    # a "published" checkpoint: random weights in the layout, loaded strict
    checkpoint = {"model": {k: torch.randn_like(v) * 0.1 for k, v in model.state_dict().items()}}
    model.load_state_dict(checkpoint["model"], strict=True)
    imgs = torch.randn(3, 3, *img_size)
    noise = torch.rand(3, model.grid_size[0] * model.grid_size[1])
    loss, pred, mask = model(imgs, mask_ratio=0.75, noise=noise)
    ref_loss, ref_pred, ref_mask = reference_mae(
        checkpoint["model"], imgs, noise, 0.75, patch, 4, 2, 2, 2, norm_pix
    )
    assert torch.equal(mask, ref_mask)
    assert torch.allclose(pred, ref_pred, atol=1e-5)
    assert torch.allclose(loss, ref_loss, atol=1e-6)


def test_patchify_round_trip_non_square():
    model = create_mae(
        "tiny",
        img_size=(64, 32),
        patch_size=16,
        embed_dim=32,
        depth=1,
        num_heads=2,
        decoder_dim=16,
        decoder_depth=1,
        decoder_heads=2,
    )
    imgs = torch.randn(2, 3, 64, 32)
    patches = model.patchify(imgs)
    assert patches.shape == (2, 8, 16 * 16 * 3)
    assert torch.equal(
        patches[0, 1], imgs[0, :, 0:16, 16:32].permute(1, 2, 0).reshape(-1)
    )  # row 0, col 1
    assert torch.equal(model.unpatchify(patches), imgs)


def test_sizes_and_registry_names():
    with torch.device("meta"):  # shapes only: no memory, no init cost
        large = create_mae("large")
        huge = mae_vit_huge_patch14()
        lite = mae_vit_tiny_patch16()
        tiny = create_mae("tiny", embed_dim=192, depth=4, num_heads=3, img_size=64, patch_size=8)
    assert (large.embed_dim, len(large.blocks), large.blocks[0].attn.num_heads) == (1024, 24, 16)
    assert (huge.embed_dim, len(huge.blocks), huge.patch_size, huge.grid_size) == (
        1280,
        32,
        14,
        (16, 16),
    )
    assert (lite.embed_dim, len(lite.blocks), lite.blocks[0].attn.num_heads) == (192, 12, 12)
    assert (lite.decoder_embed_dim, len(lite.decoder_blocks)) == (96, 1)
    assert lite.decoder_blocks[0].attn.num_heads == 3
    assert (len(tiny.blocks), tiny.grid_size, len(tiny.decoder_blocks)) == (4, (8, 8), 8)


@pytest.mark.parametrize(
    "img_size,patch", [((256, 128), 16), ((224, 224), 14), ((256, 256), 16), ((64, 64), 8)]
)
def test_interface_shapes(img_size, patch):
    model = create_mae(
        "tiny", img_size=img_size, patch_size=patch, embed_dim=32, depth=1, num_heads=2,
        decoder_dim=16, decoder_depth=1, decoder_heads=2,
    )  # fmt: skip
    gh, gw = img_size[0] // patch, img_size[1] // patch
    length, keep = gh * gw, int(gh * gw * 0.25)
    imgs = torch.randn(2, 3, *img_size)
    latent, mask, ids_restore = model.forward_encoder(imgs, 0.75)
    assert model.grid_size == (gh, gw)
    assert latent.shape == (2, 1 + keep, 32) and mask.shape == ids_restore.shape == (2, length)
    pred, dec_tokens = model.forward_decoder(latent, ids_restore)
    assert pred.shape == (2, length, patch * patch * 3) and dec_tokens.shape == (2, length, 16)
    assert torch.allclose(model.decoder_pred(dec_tokens), pred)
    loss, _, _ = model(imgs, 0.75)
    loss.backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None and model.pos_embed.grad is None


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(img_size=(250, 128)), r"img_size \(250, 128\) is not divisible by patch_size 16"),
        (dict(embed_dim=100, num_heads=3), "encoder width 100 is not divisible by its 3 heads"),
        (dict(decoder_dim=30, decoder_heads=3), "decoder width 30 must be divisible by 4"),
    ],
)
def test_bad_dimensions_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        create_mae("tiny", **{"depth": 1, "decoder_depth": 1, **kw})
    with pytest.raises(ValueError, match="unknown ViT size 'gigantic'"):
        create_mae("gigantic")


def test_mae_method_is_the_model_loss():
    model = create_mae(
        "tiny", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
        decoder_dim=16, decoder_depth=1, decoder_heads=2, norm_pix_loss=True,
    )  # fmt: skip
    from cgdmae.pretrain.methods import with_defaults  # the registry, at the schema's defaults

    method = with_defaults("mae", model, mask_ratio=0.6)
    imgs = torch.randn(2, 3, 32, 32)
    torch.manual_seed(3)
    out = method({"image": imgs})
    torch.manual_seed(3)
    expected, _, mask = model(imgs, mask_ratio=0.6)
    assert set(out) == {"loss", "mae"} and torch.equal(out["loss"], expected)
    assert mask.sum(1).tolist() == [16 - int(16 * 0.4)] * 2
    out["loss"].backward()
    assert model.decoder_pred.weight.grad is not None
