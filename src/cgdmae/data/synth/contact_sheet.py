"""A labelled contact sheet of the synthetic world, to look at before trusting it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cgdmae.data.synth.world import VERI_COLORS, VERI_TYPES, VIEWPOINTS, SynthWorld
from cgdmae.files import atomic_write

LABEL_W = 240
TILE_GAP = 2


def _row(label: str, tiles: list[Image.Image], tile: tuple[int, int], n_cols: int) -> Image.Image:
    th, tw = tile
    row = Image.new("RGB", (LABEL_W + n_cols * (tw + TILE_GAP), th + TILE_GAP), (255, 255, 255))
    ImageDraw.Draw(row).text((4, th // 2 - 6), label, fill=(0, 0, 0))
    for k, img in enumerate(tiles):
        row.paste(img, (LABEL_W + k * (tw + TILE_GAP), 0))
    return row


def contact_sheet(
    seed: int, image_size: tuple[int, int] = (64, 64), n_cameras: int = 20
) -> Image.Image:
    """Rows: every camera, type, colour and viewpoint, then look-alike identity pairs."""
    world = SynthWorld(seed, n_cameras=n_cameras)
    rng = np.random.default_rng([seed, 99])
    pool = world.sample_identities(400, rng)
    n_cols = 10
    rows = []
    for start in range(0, len(world.cameras), n_cols):
        cams = range(start, min(start + n_cols, len(world.cameras)))
        tiles = [world.render(pool[c], c, rng, image_size).image for c in cams]
        rows.append(_row(f"cameras {start + 1} to {cams[-1] + 1}", tiles, image_size, n_cols))
    for t, type_name in enumerate(VERI_TYPES):
        models = [m for m in world.models if m.type == t]
        tiles = []
        for k in range(n_cols):
            ident = world.make_identity(
                k, models[k % len(models)].index, int(rng.integers(10)), rng
            )
            tiles.append(world.render(ident, int(rng.integers(n_cameras)), rng, image_size).image)
        rows.append(_row(f"type: {type_name} ({len(models)} models)", tiles, image_size, n_cols))
    for half in (0, 5):
        tiles = []
        for c in range(half, half + 5):
            for _ in range(2):
                ident = world.make_identity(0, int(rng.integers(len(world.models))), c, rng)
                tiles.append(
                    world.render(ident, int(rng.integers(n_cameras)), rng, image_size).image
                )
        rows.append(
            _row("colours: " + ", ".join(VERI_COLORS[half : half + 5]), tiles, image_size, n_cols)
        )
    for vp in VIEWPOINTS:
        tiles = [
            world.render(pool[k], k % n_cameras, rng, image_size, viewpoint=vp).image
            for k in range(n_cols)
        ]
        rows.append(_row(f"view: {vp}", tiles, image_size, n_cols))
    # look-alikes: same model and colour, different plate and accessories, same camera and framing
    pairs = []
    for k in range(n_cols // 2):
        a = pool[k]
        b = world.make_identity(1000 + k, a.model, a.color, rng)
        cam = int(rng.integers(n_cameras))
        shot = world.sample_shot(cam, rng, viewpoint="front")
        pairs += [
            world.render(a, cam, rng, image_size, shot=shot).image,
            world.render(b, cam, rng, image_size, shot=shot).image,
        ]
    rows.append(_row("look-alike pairs (front)", pairs, image_size, n_cols))
    sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), (255, 255, 255))
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    return sheet


def write_contact_sheet(
    out_png: Path, *, seed: int, image_size: tuple[int, int] = (64, 64), n_cameras: int = 20
) -> None:
    out_png = Path(out_png)
    sheet = contact_sheet(seed, image_size, n_cameras)
    atomic_write(out_png, lambda f: sheet.save(f, format="PNG"))
