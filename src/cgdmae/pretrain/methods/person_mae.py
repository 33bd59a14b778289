"""PersonMAE: predict a shifted RegionB from masked RegionA, in pixels and in EMA features.

"PersonMAE: Person Re-Identification Pre-Training with Masked AutoEncoders":

- RegionA and RegionB come from :class:`cgdmae.pretrain.views.CrossRegionDataset` (``image``,
  ``target`` and RegionB's corner ``shift`` in pixels); RegionA is masked (block-wise in the
  paper: ``mask_strategy: block``) and its visible patches go through the MAE encoder.
- Both decoders see the encoded visible tokens at their RegionA positions plus N query tokens
  whose fixed sin-cos position embeddings are evaluated at RegionB's patch positions in RegionA's
  frame, r(x, y) = (x + s_h / T, y + s_w / T) (Eq. 4; fractional when the shift is not a multiple
  of the patch size T).
- The pixel decoder is the MAE's own decoder (2 blocks in the paper) and regresses RegionB's
  patches (per-patch normalised with ``norm_pix_loss``); the feature decoder (2 timm blocks)
  predicts the patch features of RegionB under an EMA copy of the encoder, with SmoothL1 (β = 2).
- L = L_p + λ · L_f. Both terms are means over RegionB's patches (the paper writes sums over
  patches for both, so the ratio, and λ, is the same).
- The EMA momentum goes linearly from 0.999 to 0.9999 over the first 20 % of training (20 of
  100 epochs) and then stays, as in the paper.

"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from cgdmae.models import MaskedAutoencoderViT
from cgdmae.pretrain.methods.base import MethodInputs, PretrainMethod, register_method
from cgdmae.pretrain.methods.encoders import ema_momentum, ema_update, encode_tokens, encoder_copy
from cgdmae.pretrain.views import CrossRegionDataset


# ---- PersonMAE ----------------------------------------------------------------------------------
def shifted_pos_embed(dim: int, grid: tuple[int, int], shift: torch.Tensor) -> torch.Tensor:
    """MAE's 2-D sin-cos table evaluated at (row + shift_r, col + shift_c): [B, h·w, dim].

    ``shift`` [B, 2] is in patch units and may be fractional. Channel order follows
    :func:`cgdmae.models.sincos_pos_embed_2d` (first half the column, each half sin then cos),
    so a zero shift gives back the model's own table.
    """
    h, w = grid
    device = shift.device
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64, device=device) / (dim / 4))
    rows = torch.arange(h, dtype=torch.float64, device=device).view(1, h, 1).expand(-1, h, w)
    cols = torch.arange(w, dtype=torch.float64, device=device).view(1, 1, w).expand(-1, h, w)
    shift = shift.to(torch.float64)
    rows = (rows + shift[:, 0].view(-1, 1, 1)).reshape(-1, h * w, 1) * omega
    cols = (cols + shift[:, 1].view(-1, 1, 1)).reshape(-1, h * w, 1) * omega
    table = torch.cat([cols.sin(), cols.cos(), rows.sin(), rows.cos()], dim=-1)
    return table.float()


def predict_region(
    tokens: torch.Tensor,
    ids_keep: torch.Tensor,
    pos_table: torch.Tensor,
    queries: torch.Tensor,
    blocks: nn.ModuleList,
    norm: nn.Module,
) -> torch.Tensor:
    """Decoder pass: [CLS + visible tokens at their RegionA positions, queries] → query outputs.

    ``tokens`` [B, 1 + n_vis, Dd] are the decoder-width encoder outputs, ``pos_table``
    [1, 1 + L, Dd] RegionA's table (CLS first), ``queries`` [B, L, Dd] the position-informed
    query tokens for RegionB.
    """
    dim = tokens.shape[-1]
    vis_pos = torch.gather(
        pos_table[:, 1:].expand(tokens.shape[0], -1, -1),
        1,
        ids_keep.unsqueeze(-1).expand(-1, -1, dim),
    )
    pos = torch.cat([pos_table[:, :1].expand(tokens.shape[0], -1, -1), vis_pos], dim=1)
    x = torch.cat([tokens + pos, queries], dim=1)
    for block in blocks:
        x = block(x)
    return norm(x)[:, -queries.shape[1] :]


class RegionDecoder(nn.Module):
    """PersonMAE's feature decoder: its own embedding, query token, timm blocks and projection."""

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, out_dim: int):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.embed = nn.Linear(in_dim, dim)
        self.query_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            [Block(dim, heads, 4.0, qkv_bias=True, norm_layer=norm_layer) for _ in range(depth)]
        )
        self.norm = norm_layer(dim)
        self.pred = nn.Linear(dim, out_dim)
        nn.init.normal_(self.query_token, std=0.02)
        for m in self.modules():  # MAE's decoder init
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(
        self,
        latent: torch.Tensor,
        ids_keep: torch.Tensor,
        pos_table: torch.Tensor,
        query_pos: torch.Tensor,
    ) -> torch.Tensor:
        queries = self.query_token + query_pos
        out = predict_region(
            self.embed(latent), ids_keep, pos_table, queries, self.blocks, self.norm
        )
        return self.pred(out)


@register_method("person_mae")
class PersonMAEMethod(PretrainMethod):
    """Cross-region pixel + EMA-feature prediction (see the module docstring).

    The EMA target encoder is method state (checkpointed, never optimised); the encoder that is
    exported is the online one, which PersonMAE fine-tunes.
    """

    @classmethod
    def from_spec(cls, model, spec: dict[str, Any], inputs: MethodInputs) -> PersonMAEMethod:
        return cls(model, **cls.settings(spec))

    @classmethod
    def settings(cls, spec: dict[str, Any]) -> dict[str, Any]:
        cfg = spec["person_mae"]
        return {
            "mask_ratio": spec["mask_ratio"],
            "lam": cfg["lambda"],
            "beta": cfg["beta"],
            "ema_momentum": tuple(cfg["ema_momentum"]),
            "ema_ramp": cfg["ema_ramp"],
            "feature_depth": cfg["feature_depth"],
        }

    @classmethod
    def views(cls, spec, paths, seed, targets=None, targets_file=None) -> CrossRegionDataset:
        """Two crops of one image a random shift apart (cross-region views)."""
        return CrossRegionDataset(
            paths,
            img_size=tuple(spec["model"]["img_size"]),
            scale=tuple(spec["crop_scale"]),
            max_shift=spec["person_mae"]["shift"],
            seed=seed,
        )

    def __init__(
        self,
        model: MaskedAutoencoderViT,
        *,
        mask_ratio: float,
        lam: float,
        beta: float,
        ema_momentum: tuple[float, float],
        ema_ramp: float,
        feature_depth: int,
    ):
        super().__init__()
        self.model = model
        self.mask_ratio, self.lam, self.beta = mask_ratio, lam, beta
        self.momentum, self.ema_ramp = tuple(ema_momentum), ema_ramp
        self.target_encoder = encoder_copy(model)
        self.feature_decoder = RegionDecoder(
            model.embed_dim,
            model.decoder_embed_dim,
            feature_depth,
            model.decoder_blocks[0].attn.num_heads,
            model.embed_dim,
        )

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        model = self.model
        region_a, region_b = batch["image"], batch["target"]
        latent, _, ids_restore = model.forward_encoder(region_a, self.mask_ratio)
        ids_keep = torch.argsort(ids_restore, dim=1)[:, : latent.shape[1] - 1]
        query_pos = shifted_pos_embed(
            model.decoder_embed_dim, model.grid_size, batch["shift"] / model.patch_size
        )

        queries = model.mask_token + query_pos
        pix_tokens = predict_region(
            model.decoder_embed(latent),
            ids_keep,
            model.decoder_pos_embed,
            queries,
            model.decoder_blocks,
            model.decoder_norm,
        )
        every_patch = torch.ones(ids_restore.shape, device=region_b.device)
        pixel = model.forward_loss(region_b, model.decoder_pred(pix_tokens), every_patch)

        with torch.no_grad():
            target = encode_tokens(self.target_encoder, region_b)[:, 1:].float()
        pred = self.feature_decoder(latent, ids_keep, model.decoder_pos_embed, query_pos)
        feature = F.smooth_l1_loss(pred.float(), target, beta=self.beta)
        loss = pixel + self.lam * feature
        return {"loss": loss, "pixel": pixel.detach(), "feature": feature.detach()}

    def momentum_at(self, step: int, total_steps: int) -> float:
        return ema_momentum(step / max(total_steps, 1), *self.momentum, ramp=self.ema_ramp)

    def on_step_end(self, step: int, total_steps: int) -> None:
        ema_update(self.target_encoder, self.model, self.momentum_at(step, total_steps))
