"""MAE-Lite: MAE for ViT-Tiny, optionally distilled from a frozen larger MAE encoder.

Wang et al., "A Closer Look at Self-Supervised Lightweight Vision Transformers" (wangsr126/mae-lite):
ViT-Ti/16 with 12 heads and a light decoder (96 wide, 1 block, 3 heads; see
:func:`cgdmae.models.mae_vit_tiny_patch16`), ``norm_pix_loss`` and 75 % masking. With a teacher
(a pre-trained MAE encoder, e.g. MAE-Base, loaded from another run's ``checkpoint.pth``) the
loss adds

    w · MSE(adapter(A_s), A_t)

where A_s, A_t are the last block's pre-softmax attention maps q·kᵀ/√d [B, heads, L, L] of the
student and of the teacher on the same visible patches (the teacher gets the student's masking
noise), and the adapter is a 1×1 convolution over heads (student heads → teacher heads, no bias).

Getting A: timm's ``Attention`` runs the fused ``F.scaled_dot_product_attention``, which never
materialises the attention matrix, so no hook can read it (MAE-Lite patched the attention module
instead). We run the encoder up to the last block ourselves and compute q·kᵀ/√d from that
block's own ``qkv`` Linear on its ``norm1`` input, exactly the logits SDPA uses, then let the
block run as usual. It costs one extra qkv projection of the last block and leaves the fast path
and the MAE/timm weight layout untouched.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from cgdmae.models import MaskedAutoencoderViT, block_mask_noise
from cgdmae.models.export import DECODER_PREFIXES
from cgdmae.pretrain.methods.base import MethodInputs, PretrainMethod, register_method
from cgdmae.pretrain.methods.encoders import encoder_copy


def attention_logits(block: Block, x: torch.Tensor) -> torch.Tensor:
    """Pre-softmax attention q·kᵀ·scale of a timm block on its input ``x``: [B, heads, L, L]."""
    attn = block.attn
    batch, length, _ = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(batch, length, 3, attn.num_heads, attn.head_dim)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return (q * attn.scale) @ k.transpose(-2, -1)


def encode_with_attention(
    model: MaskedAutoencoderViT, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``forward_encoder`` that also returns the last block's pre-softmax attention."""
    x = model.patch_embed(imgs) + model.pos_embed[:, 1:, :]
    x, mask, ids_restore = model.random_masking(x, mask_ratio, noise)
    cls = (model.cls_token + model.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    for block in model.blocks[:-1]:
        x = block(x)
    logits = attention_logits(model.blocks[-1], x)
    x = model.blocks[-1](x)
    return model.norm(x), mask, ids_restore, logits


def load_teacher_encoder(
    model: MaskedAutoencoderViT, state_dict: dict[str, torch.Tensor]
) -> MaskedAutoencoderViT:
    """Load a MAE checkpoint's ``model`` weights into ``model`` and return its frozen encoder.

    Decoder weights may be absent (MAE's released encoders drop them); a missing encoder key, an
    unknown key or a shape mismatch is an error, so a teacher of the wrong size is never
    silently half-loaded.
    """
    result = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(DECODER_PREFIXES)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"teacher checkpoint does not fit the teacher model: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    return encoder_copy(model).eval()


@register_method("mae_lite")
class MAELiteMethod(PretrainMethod):
    """MAE, plus last-layer attention distillation when a ``teacher`` encoder is given.

    The teacher is weights from elsewhere: under ``frozen_prefixes``, so it is neither
    checkpointed nor optimised; the adapter is trained and checkpointed with the method.
    """

    frozen_prefixes = ("teacher.",)

    @classmethod
    def from_spec(cls, model, spec: dict[str, Any], inputs: MethodInputs) -> MAELiteMethod:
        """Alone, or distilling the frozen model of ``mae_lite.teacher_run`` (its
        ``checkpoint.pth``, the rule's input)."""
        from cgdmae.pretrain.run import load_mae_teacher  # builds the teacher run's model

        cfg = spec["mae_lite"]
        teacher = None
        if cfg["teacher_run"] is not None:
            if inputs.teacher_checkpoint is None:
                raise ValueError(
                    f"mae_lite.teacher_run is {cfg['teacher_run']!r} but no teacher checkpoint "
                    "was given"
                )
            teacher = load_mae_teacher(inputs.teacher_checkpoint)
        return cls(model, teacher, **cls.settings(spec))

    @classmethod
    def settings(cls, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "mask_ratio": spec["mask_ratio"],
            "distill_weight": spec["mae_lite"]["distill_weight"],
        }

    def __init__(
        self,
        model: MaskedAutoencoderViT,
        teacher: MaskedAutoencoderViT | None = None,
        *,
        mask_ratio: float,
        distill_weight: float,
    ):
        super().__init__()
        self.model = model
        self.mask_ratio, self.distill_weight = mask_ratio, distill_weight
        self.teacher = teacher.requires_grad_(False).eval() if teacher is not None else None
        self.adapter: nn.Conv2d | None = None
        if teacher is not None:
            if tuple(teacher.grid_size) != tuple(model.grid_size):
                raise ValueError(
                    f"the teacher's patch grid {tuple(teacher.grid_size)} differs from the "
                    f"student's {tuple(model.grid_size)}: both must see the same patches"
                )
            heads_s = model.blocks[-1].attn.num_heads
            heads_t = teacher.blocks[-1].attn.num_heads
            self.adapter = nn.Conv2d(heads_s, heads_t, kernel_size=1, bias=False)

    def train(self, mode: bool = True) -> MAELiteMethod:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def masking_noise(self, imgs: torch.Tensor) -> torch.Tensor:
        """The noise the model would draw itself, drawn here so the teacher can share it."""
        grid = self.model.grid_size
        if self.model.mask_strategy == "block":
            return block_mask_noise(imgs.shape[0], grid, self.mask_ratio, device=imgs.device)
        return torch.rand(imgs.shape[0], grid[0] * grid[1], device=imgs.device)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        imgs = batch["image"]
        if self.teacher is None:
            loss, _, _ = self.model(imgs, self.mask_ratio)
            return {"loss": loss, "mae": loss.detach()}
        noise = self.masking_noise(imgs)
        latent, mask, ids_restore, attn = encode_with_attention(
            self.model, imgs, self.mask_ratio, noise
        )
        pred, _ = self.model.forward_decoder(latent, ids_restore)
        mae = self.model.forward_loss(imgs, pred, mask)
        with torch.no_grad():
            _, _, _, attn_teacher = encode_with_attention(
                self.teacher, imgs, self.mask_ratio, noise
            )
        distill = F.mse_loss(self.adapter(attn).float(), attn_teacher.float())
        loss = mae + self.distill_weight * distill
        return {"loss": loss, "mae": mae.detach(), "distill": distill.detach()}
