"""encoder.pth loads into timm's ViT (strict, through its checkpoint filter) and MAE's models_vit."""

import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from cgdmae.models import create_mae, encoder_state_dict, save_encoder


def test_encoder_keys_drop_the_decoder_only():
    model = create_mae(
        "tiny",
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        decoder_dim=16,
        decoder_depth=1,
        decoder_heads=2,
    )
    keys = set(encoder_state_dict(model))
    assert not any(k.startswith(("decoder_", "mask_token")) for k in keys)
    assert {"cls_token", "pos_embed", "norm.weight", "norm.bias", "blocks.1.mlp.fc2.bias"} <= keys


def test_base_export_loads_into_timm_strict(tmp_path):
    torch.manual_seed(0)
    model = create_mae("base")
    path = tmp_path / "encoder.pth"
    save_encoder(encoder_state_dict(model), path)
    vit = timm.create_model(
        "vit_base_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path)),
        num_classes=0,
    )
    assert torch.equal(vit.blocks[11].mlp.fc2.weight, model.blocks[11].mlp.fc2.weight)
    assert torch.equal(vit.pos_embed, model.pos_embed)
    # timm runs the same computation on the unmasked sequence as our encoder blocks do
    imgs = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        x = model.patch_embed(imgs) + model.pos_embed[:, 1:]
        x = torch.cat([model.cls_token + model.pos_embed[:, :1], x], dim=1)
        for block in model.blocks:
            x = block(x)
        latent = model.norm(x)
        features = vit.forward_features(imgs)
    assert torch.allclose(latent, features, atol=1e-4)


def test_export_loads_into_mae_models_vit_with_global_pool(tmp_path):
    """MAE's main_finetune.py loads with strict=False and asserts exactly these missing keys."""
    model = create_mae("base")
    path = tmp_path / "encoder.pth"
    save_encoder(encoder_state_dict(model), path)
    # models_vit.VisionTransformer(global_pool=True): timm's ViT with mean pooling and fc_norm
    finetune = VisionTransformer(
        img_size=224,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        global_pool="avg",
        fc_norm=True,
        num_classes=1000,
    )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    msg = finetune.load_state_dict(checkpoint["model"], strict=False)
    assert set(msg.missing_keys) == {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}
    assert set(msg.unexpected_keys) == {
        "norm.weight",
        "norm.bias",
    }  # models_vit drops norm when pooling


def test_tiny_export_loads_into_matching_timm_vit(tmp_path):
    model = create_mae(
        "tiny",
        img_size=(64, 32),
        patch_size=8,
        embed_dim=64,
        depth=3,
        num_heads=4,
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=2,
    )
    path = tmp_path / "encoder.pth"
    save_encoder(model, path)
    vit = VisionTransformer(
        img_size=(64, 32), patch_size=8, embed_dim=64, depth=3, num_heads=4, num_classes=0
    )
    vit.load_state_dict(torch.load(path, weights_only=True)["model"], strict=True)
    assert not list(tmp_path.glob("*.tmp"))


def test_scratch_exports_the_initialisation(tmp_path):
    torch.manual_seed(0)
    model = create_mae(
        "tiny", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
        decoder_dim=16, decoder_depth=1, decoder_heads=2,
    )  # fmt: skip
    init = {k: v.clone() for k, v in model.state_dict().items()}
    from cgdmae.pretrain.methods import with_defaults  # the registry, at the schema's defaults

    scratch = with_defaults("scratch", model)
    exported = scratch.encoder_state_dict()
    assert scratch.model is model and set(exported) == {
        k for k in init if not k.startswith(("decoder_", "mask_token"))
    }
    assert all(torch.equal(v, init[k]) for k, v in exported.items())
    save_encoder(exported, tmp_path / "encoder.pth")
    saved = torch.load(tmp_path / "encoder.pth", weights_only=True)["model"]
    assert all(torch.equal(saved[k], init[k]) for k in exported)
