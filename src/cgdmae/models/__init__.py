"""Models: the MAE-compatible masked autoencoder, masking strategies and encoder export."""

from cgdmae.models.export import atomic_save, encoder_state_dict, save_encoder
from cgdmae.models.mae import (
    ENCODER_SIZES,
    MaskedAutoencoderViT,
    create_mae,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
    mae_vit_small_patch16,
    mae_vit_tiny_patch16,
)
from cgdmae.models.masking import MASK_STRATEGIES, block_mask, block_mask_noise, num_visible
from cgdmae.models.pos_embed import resize_pos_embed, sincos_pos_embed_2d

__all__ = [
    "ENCODER_SIZES",
    "MASK_STRATEGIES",
    "MaskedAutoencoderViT",
    "atomic_save",
    "block_mask",
    "block_mask_noise",
    "create_mae",
    "encoder_state_dict",
    "mae_vit_base_patch16",
    "mae_vit_huge_patch14",
    "mae_vit_large_patch16",
    "mae_vit_small_patch16",
    "mae_vit_tiny_patch16",
    "num_visible",
    "resize_pos_embed",
    "save_encoder",
    "sincos_pos_embed_2d",
]
