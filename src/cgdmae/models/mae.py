"""Masked autoencoder with a ViT backbone, in facebookresearch/mae's state-dict layout.

Built from timm's ``Block`` (its attention runs ``F.scaled_dot_product_attention``) and
``PatchEmbed``. Keys, shapes, init, the fixed sin-cos position embeddings, the noise-driven
random masking and the loss all follow MAE's ``models_mae.py``, so a published MAE
pre-training checkpoint loads with ``strict=True`` and gives the same loss for the same images
and noise. Non-square inputs and any patch size work; masking can also be block-wise.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from cgdmae.models.masking import MASK_STRATEGIES, block_mask_noise, num_visible
from cgdmae.models.pos_embed import sincos_pos_embed_2d

# Encoder sizes: embed dim, depth, heads (ViT-Ti/S/B/L/H).
ENCODER_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}


class MaskedAutoencoderViT(nn.Module):
    """ViT encoder on the visible patches, light decoder reconstructing the masked ones."""

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_pix_loss: bool = False,
        mask_strategy: str = "random",
    ):
        super().__init__()
        if mask_strategy not in MASK_STRATEGIES:
            raise ValueError(
                f"mask_strategy must be one of {MASK_STRATEGIES}, got {mask_strategy!r}"
            )
        _check_dims(img_size, patch_size, embed_dim, num_heads, "encoder")
        _check_dims(img_size, patch_size, decoder_embed_dim, decoder_num_heads, "decoder")
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.patch_size = patch_size
        self.grid_size: tuple[int, int] = tuple(self.patch_embed.grid_size)
        num_patches = self.patch_embed.num_patches
        self.embed_dim = embed_dim
        self.decoder_embed_dim = decoder_embed_dim
        self.in_chans = in_chans
        self.norm_pix_loss = norm_pix_loss
        self.mask_strategy = mask_strategy

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False
        )
        self.blocks = nn.ModuleList(
            [
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                for _ in range(depth)
            ]
        )
        self.norm = norm_layer(embed_dim)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + 1, decoder_embed_dim), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            [
                Block(
                    decoder_embed_dim,
                    decoder_num_heads,
                    mlp_ratio,
                    qkv_bias=True,
                    norm_layer=norm_layer,
                )
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans, bias=True)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """MAE's init: fixed sin-cos positions, xavier Linear and patch conv, normal(.02) tokens."""
        self.pos_embed.data.copy_(
            sincos_pos_embed_2d(self.embed_dim, self.grid_size, cls_token=True)
        )
        self.decoder_pos_embed.data.copy_(
            sincos_pos_embed_2d(self.decoder_embed_dim, self.grid_size, cls_token=True)
        )
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(_init_module)

    # ---- patches --------------------------------------------------------------------------------
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, p*p*C) in MAE's "nhwpqc" order."""
        p, (h, w) = self.patch_size, self.grid_size
        c = imgs.shape[1]
        x = imgs.reshape(imgs.shape[0], c, h, p, w, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(imgs.shape[0], h * w, p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, p*p*C) -> (N, C, H, W)."""
        p, (h, w) = self.patch_size, self.grid_size
        c = x.shape[2] // (p * p)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    # ---- masking --------------------------------------------------------------------------------
    def random_masking(
        self, x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep the ``int(L*(1-r))`` patches with the smallest noise; mask is 1 where removed."""
        n, length, d = x.shape
        len_keep = num_visible(length, mask_ratio)
        if noise is None:
            if self.mask_strategy == "block":
                noise = block_mask_noise(n, self.grid_size, mask_ratio, device=x.device)
            else:
                noise = torch.rand(n, length, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        mask = torch.ones(n, length, device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_masked, mask, ids_restore

    # ---- forward --------------------------------------------------------------------------------
    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(
        self, latent: torch.Tensor, ids_restore: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the pixel predictions and the normalised decoder tokens (CLS dropped)."""
        x = self.decoder_embed(latent)
        n, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        tokens = self.decoder_norm(x)[:, 1:, :]
        return self.decoder_pred(tokens), tokens

    def forward_loss(
        self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean squared error per patch, averaged over the masked patches only."""
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred, _ = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask


def _check_dims(
    img_size: int | tuple[int, int], patch_size: int, dim: int, heads: int, part: str
) -> None:
    """Shape errors a config can cause, caught here rather than deep inside a reshape."""
    sizes = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if any(s % patch_size for s in sizes):
        raise ValueError(f"img_size {sizes} is not divisible by patch_size {patch_size}")
    if dim % heads:
        raise ValueError(f"{part} width {dim} is not divisible by its {heads} heads")
    if dim % 4:
        raise ValueError(f"{part} width {dim} must be divisible by 4 (2-D sin-cos positions)")


def _init_module(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


def create_mae(
    size: str = "base",
    *,
    img_size: int | tuple[int, int] = 224,
    patch_size: int = 16,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    decoder_dim: int = 512,
    decoder_depth: int = 8,
    decoder_heads: int = 16,
    norm_pix_loss: bool = False,
    mask_strategy: str = "random",
) -> MaskedAutoencoderViT:
    """A MAE of a named encoder size; ``embed_dim``/``depth``/``num_heads`` override the size."""
    if size not in ENCODER_SIZES:
        raise ValueError(f"unknown ViT size {size!r}; known: {', '.join(ENCODER_SIZES)}")
    dim, layers, heads = ENCODER_SIZES[size]
    return MaskedAutoencoderViT(
        img_size=tuple(img_size) if not isinstance(img_size, int) else img_size,
        patch_size=patch_size,
        embed_dim=embed_dim or dim,
        depth=depth or layers,
        num_heads=num_heads or heads,
        decoder_embed_dim=decoder_dim,
        decoder_depth=decoder_depth,
        decoder_num_heads=decoder_heads,
        norm_pix_loss=norm_pix_loss,
        mask_strategy=mask_strategy,
    )


def mae_vit_tiny_patch16(**kw) -> MaskedAutoencoderViT:
    """MAE-Lite's tiny: ViT-Ti/16 with 12 heads (not 3) and a 96-dim, 1-block, 3-head decoder."""
    kw = {"num_heads": 12, "decoder_dim": 96, "decoder_depth": 1, "decoder_heads": 3, **kw}
    return create_mae("tiny", patch_size=16, **kw)


def mae_vit_small_patch16(**kw) -> MaskedAutoencoderViT:
    return create_mae("small", patch_size=16, **kw)


def mae_vit_base_patch16(**kw) -> MaskedAutoencoderViT:
    return create_mae("base", patch_size=16, **kw)


def mae_vit_large_patch16(**kw) -> MaskedAutoencoderViT:
    return create_mae("large", patch_size=16, **kw)


def mae_vit_huge_patch14(**kw) -> MaskedAutoencoderViT:
    return create_mae("huge", patch_size=14, **kw)
