"""Masking: MAE's visible count and noise semantics, and exact, block-shaped BEiT-style masks."""

import math

import numpy as np
import pytest
import torch

from cgdmae.models import block_mask, block_mask_noise, create_mae, num_visible


def small_mae(mask_strategy: str = "random", img_size=(64, 64)):
    return create_mae(
        "tiny", img_size=img_size, patch_size=8, embed_dim=32, depth=1, num_heads=2,
        decoder_dim=16, decoder_depth=1, decoder_heads=2, mask_strategy=mask_strategy,
    )  # fmt: skip


def edges(mask: np.ndarray) -> int:
    """Masked/unmasked neighbour pairs: low for contiguous blocks, high for scattered patches."""
    return int((mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum())


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratios_outside_open_interval_are_rejected(ratio):
    with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\)"):
        num_visible(196, ratio)
    with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\)"):
        small_mae("block")(torch.randn(1, 3, 64, 64), mask_ratio=ratio)


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="mask_strategy must be one of .* got 'grid'"):
        small_mae("grid")


def test_random_masking_keeps_mae_count_and_unshuffles():
    model = small_mae()
    x = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 64, 1)
    for ratio in (0.1, 0.5, 0.75, 0.9):
        kept, mask, ids_restore = model.random_masking(x, ratio)
        assert kept.shape[1] == int(64 * (1 - ratio)) == num_visible(64, ratio)
        assert torch.all(mask.sum(1) == 64 - kept.shape[1])
        kept_index = kept[..., 0].long() % 64
        assert torch.all(mask.gather(1, kept_index) == 0)  # kept patches are the unmasked ones
        unshuffled = torch.cat([kept, torch.zeros(2, 64 - kept.shape[1], 1)], 1)
        unshuffled = unshuffled.gather(1, ids_restore.unsqueeze(-1))
        assert torch.equal(unshuffled[..., 0] * (1 - mask), x[..., 0] * (1 - mask))


@pytest.mark.parametrize("strategy", ["random", "block"])
def test_given_noise_decides_the_mask(strategy):
    model = small_mae(strategy)
    noise = torch.rand(3, 64)
    _, mask, _ = model.forward_encoder(torch.randn(3, 3, 64, 64), 0.75, noise=noise)
    expected = torch.ones(3, 64)
    expected.scatter_(1, noise.argsort(1)[:, :16], 0)  # the 16 lowest-noise patches stay
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("grid", [(14, 14), (16, 8), (8, 8), (4, 4), (2, 3)])
@pytest.mark.parametrize("ratio", [0.05, 0.4, 0.75, 0.9])
def test_block_mask_has_exactly_mae_count(grid, ratio):
    rng = np.random.default_rng(0)
    total = grid[0] * grid[1]
    num_masked = total - num_visible(total, ratio)
    for _ in range(20):
        mask = block_mask(grid, num_masked, rng)
        assert mask.shape == grid and mask.sum() == num_masked


def test_block_mask_is_made_of_blocks():
    rng = np.random.default_rng(0)
    random = np.zeros(196, bool)
    random[rng.choice(196, 98, replace=False)] = True
    block_edges = [edges(block_mask((14, 14), 98, rng)) for _ in range(20)]
    assert max(block_edges) < 0.6 * edges(random.reshape(14, 14))


def test_block_mask_rejects_impossible_counts():
    with pytest.raises(ValueError, match="cannot mask 200 of 196 patches"):
        block_mask((14, 14), 200, np.random.default_rng(0))


def test_block_noise_lists_visible_patches_first_and_follows_the_torch_seed():
    torch.manual_seed(0)
    noise = block_mask_noise(4, (16, 8), 0.75)
    torch.manual_seed(0)
    assert torch.equal(noise, block_mask_noise(4, (16, 8), 0.75))
    keep = num_visible(128, 0.75)
    order = noise.argsort(1)
    assert torch.all(noise.gather(1, order[:, :keep]) < 0.5)
    assert torch.all(noise.gather(1, order[:, keep:]) >= 1.0)
    masks = (noise >= 1).reshape(4, 16, 8).numpy()
    assert not np.array_equal(masks[0], masks[1])  # each sample draws its own mask


def test_block_strategy_model_masks_blocks_with_batchable_count():
    torch.manual_seed(0)
    model = small_mae("block", img_size=(128, 64))
    _, _, mask = model(torch.randn(4, 3, 128, 64), mask_ratio=0.75)
    assert torch.all(mask.sum(1) == 128 - int(128 * 0.25))
    grids = mask.reshape(4, 16, 8).bool().numpy()
    scattered = torch.rand(4, 128).argsort(1).argsort(1) >= 32
    scattered_edges = np.mean([edges(g) for g in scattered.reshape(4, 16, 8).numpy()])
    assert np.mean([edges(g) for g in grids]) < 0.6 * scattered_edges
    assert math.isfinite(model(torch.randn(2, 3, 128, 64), mask_ratio=0.4)[0].item())
