"""Writers: each synthetic dataset in the real on-disk format of the public set it stands in for.

Every writer builds its tree in a sibling ``<root>.partial`` directory and renames it into place
at the end, so a killed job never leaves a complete-looking dataset behind.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from cgdmae.data.synth.world import (
    PART_CLASSES,
    VERI_COLORS,
    VERI_TYPES,
    Identity,
    Shot,
    SynthConfigError,
    SynthWorld,
)

JPEG_QUALITY = 90


def dataset_seed(seed: int, name: str) -> list[int]:
    """Independent seed streams per dataset, so no two datasets share renders by accident."""
    return [seed, zlib.crc32(name.encode())]


@contextlib.contextmanager
def _staged(root: Path) -> Iterator[Path]:
    """Yield a staging directory that replaces ``root`` only if the block completes."""
    root = Path(root)
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if root.exists():
        shutil.rmtree(root)
    staging.rename(root)


def _save(render, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    render.image.save(path, quality=JPEG_QUALITY)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _require_positive(**counts: float) -> None:
    for key, value in counts.items():
        if value < 1:
            raise SynthConfigError(f"{key} must be at least 1, got {value}")


def _require_test_sizes(test_sizes: tuple[int, int, int] | list[int]) -> None:
    """The three nested test sets of VehicleID and VERI-Wild, by identity count."""
    if len(test_sizes) != 3 or min(test_sizes) < 1:
        raise SynthConfigError(
            f"test_sizes must be three positive id counts (small, medium, large), got {test_sizes}"
        )


def _cameras_for(rng: np.random.Generator, n_cameras: int, k: int) -> list[int]:
    return [int(c) for c in rng.choice(n_cameras, size=min(k, n_cameras), replace=False)]


def write_veri776(
    root: Path,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (64, 64),
    n_cameras: int = 20,
    n_train_ids: int = 60,
    n_test_ids: int = 30,
    images_per_id: int = 10,
    cameras_per_id: int = 5,
    query_per_id: int = 2,
) -> dict[str, int]:
    """VeRi-776: image_{train,query,test}/, name_*.txt, {train,test}_label.xml, list_*.txt."""
    _require_positive(n_train_ids=n_train_ids, n_test_ids=n_test_ids, images_per_id=images_per_id)
    if query_per_id < 0:
        raise SynthConfigError(f"query_per_id must be >= 0, got {query_per_id}")
    if not 2 <= cameras_per_id <= n_cameras:
        raise SynthConfigError(
            f"cameras_per_id must be between 2 (query and gallery cameras differ) and "
            f"n_cameras={n_cameras}, got {cameras_per_id}"
        )
    world = SynthWorld(seed, n_cameras=n_cameras)
    rng = np.random.default_rng(dataset_seed(seed, "veri776"))
    identities = world.sample_identities(n_train_ids + n_test_ids, rng)
    order = rng.permutation(len(identities))
    train_ids = sorted(int(i) for i in order[:n_train_ids])
    test_ids = sorted(int(i) for i in order[n_train_ids:])
    splits: dict[str, list[tuple[str, Identity, int]]] = {
        "train": [],
        "query": [],
        "test": [],
    }
    with _staged(root) as out:
        for split_ids, is_test in ((train_ids, False), (test_ids, True)):
            for i in split_ids:
                ident = identities[i]
                # a test identity's queries come from its first camera, its gallery from the others
                cams = _cameras_for(rng, n_cameras, cameras_per_id)
                n_query = query_per_id if is_test else 0
                gallery_cams = cams[1:] if is_test else cams
                for k in range(images_per_id + n_query):
                    is_query = k < n_query
                    cam = cams[0] if is_query else gallery_cams[k % len(gallery_cams)]
                    frame = int(rng.integers(1, 10**8))
                    name = f"{ident.vid + 1:04d}_c{cam + 1:03d}_{frame:08d}_{k}.jpg"
                    split = "query" if is_query else "test" if is_test else "train"
                    folder = {
                        "train": "image_train",
                        "query": "image_query",
                        "test": "image_test",
                    }[split]
                    _save(world.render(ident, cam, rng, image_size), out / folder / name)
                    splits[split].append((name, ident, cam))
        for split, items in splits.items():
            _write_lines(out / f"name_{split}.txt", [name for name, _, _ in items])
        _write_veri_xml(out / "train_label.xml", "TrainingImages", splits["train"])
        _write_veri_xml(out / "test_label.xml", "TestImages", splits["test"])
        _write_lines(out / "list_color.txt", [f"{i + 1} {c}" for i, c in enumerate(VERI_COLORS)])
        _write_lines(out / "list_type.txt", [f"{i + 1} {t}" for i, t in enumerate(VERI_TYPES)])
    return {split: len(items) for split, items in splits.items()}


def _write_veri_xml(path: Path, root_tag: str, items: list[tuple[str, Identity, int]]) -> None:
    """The label files as VeRi ships them: a gb2312 declaration and one <Item> per image."""
    lines = [
        '<?xml version="1.0" encoding="gb2312"?>',
        f'<{root_tag} Version="1.0">',
        f'<Items number="{len(items)}">',
    ]
    for name, ident, cam in items:
        lines.append(
            f'<Item imageName="{name}" vehicleID="{ident.vid + 1:04d}" cameraID="c{cam + 1:03d}" '
            f'colorID="{ident.color + 1}" typeID="{ident.type + 1}" />'
        )
    lines += ["</Items>", f"</{root_tag}>"]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("gb2312"))


def write_vehicleid(
    root: Path,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (64, 64),
    n_cameras: int = 20,
    n_train_ids: int = 60,
    test_sizes: tuple[int, int, int] | list[int] = (20, 40, 60),
    images_per_id: int = 6,
) -> dict[str, int]:
    """VehicleID: image/<7 digits>.jpg, train_test_split/{train_list,test_list_*}.txt, attribute/."""
    _require_positive(n_train_ids=n_train_ids, images_per_id=images_per_id)
    _require_test_sizes(test_sizes)
    world = SynthWorld(seed, n_cameras=n_cameras)
    rng = np.random.default_rng(dataset_seed(seed, "vehicleid"))
    n_test = max(test_sizes)
    identities = world.sample_identities(n_train_ids + n_test, rng)
    image_counter = 0
    lines: dict[int, list[str]] = {}
    with _staged(root) as out:
        for ident in identities:
            cams = _cameras_for(rng, n_cameras, images_per_id)
            lines[ident.vid] = []
            for k in range(images_per_id):
                image_counter += 1
                name = f"{image_counter:07d}"
                _save(
                    world.render(ident, cams[k % len(cams)], rng, image_size),
                    out / "image" / f"{name}.jpg",
                )
                lines[ident.vid].append(f"{name} {ident.vid}")
        vids = [ident.vid for ident in identities]
        train, test = vids[:n_train_ids], vids[n_train_ids:]
        split_dir = out / "train_test_split"
        _write_lines(split_dir / "train_list.txt", [line for v in train for line in lines[v]])
        for real_size, size in zip((800, 1600, 2400), test_sizes, strict=True):
            chosen = sorted(int(v) for v in rng.choice(test, size=size, replace=False))
            _write_lines(
                split_dir / f"test_list_{real_size}.txt",
                [line for v in chosen for line in lines[v]],
            )
        _write_lines(
            out / "attribute" / "color_attr.txt",
            [f"{i.vid} {i.color}" for i in identities],
        )
        _write_lines(
            out / "attribute" / "model_attr.txt",
            [f"{i.vid} {i.model}" for i in identities],
        )
    return {"images": image_counter, "train_ids": len(train), "test_ids": len(test)}


def write_veriwild(
    root: Path,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (64, 64),
    n_cameras: int = 20,
    n_train_ids: int = 60,
    test_sizes: tuple[int, int, int] | list[int] = (10, 20, 30),
    images_per_id: int = 6,
) -> dict[str, int]:
    """VERI-Wild: images/<vid>/<imgid>.jpg, train_test_split/{train_list,test_<N>,
    test_<N>_query,vehicle_info}.txt; N keeps the real names 3000/5000/10000 with fewer ids.

    A test identity's first image is its query and the rest its gallery (the real split takes
    one query per id too); the query camera differs from at least one gallery camera.
    """
    _require_positive(n_train_ids=n_train_ids)
    if images_per_id < 2:
        raise SynthConfigError(
            f"images_per_id must be at least 2 (query + gallery), got {images_per_id}"
        )
    _require_test_sizes(test_sizes)
    world = SynthWorld(seed, n_cameras=n_cameras)
    rng = np.random.default_rng(dataset_seed(seed, "veriwild"))
    identities = world.sample_identities(n_train_ids + max(test_sizes), rng)
    items: dict[int, list[str]] = {}
    info = ["id/image;Camera ID;Time;Model;Type;Color"]
    image_number = 0
    with _staged(root) as out:
        for ident in identities:
            cams = _cameras_for(rng, n_cameras, images_per_id)
            items[ident.vid] = []
            for k in range(images_per_id):
                image_number += 1
                item = f"{ident.vid + 1:05d}/{image_number:06d}"
                cam = cams[k % len(cams)]
                _save(world.render(ident, cam, rng, image_size), out / "images" / f"{item}.jpg")
                items[ident.vid].append(item)
                info.append(
                    f"{item};{cam + 1};2017-01-01 00:00:{k:02d};model{ident.model};"
                    f"{VERI_TYPES[ident.type]};{VERI_COLORS[ident.color]}"
                )
        vids = [ident.vid for ident in identities]
        train, test = vids[:n_train_ids], vids[n_train_ids:]
        split_dir = out / "train_test_split"
        _write_lines(split_dir / "train_list.txt", [i for v in train for i in items[v]])
        _write_lines(split_dir / "vehicle_info.txt", info)
        for real_size, size in zip((3000, 5000, 10000), test_sizes, strict=True):
            chosen = test[:size]  # nested, as the real test sets are
            _write_lines(split_dir / f"test_{real_size}_query.txt", [items[v][0] for v in chosen])
            _write_lines(
                split_dir / f"test_{real_size}.txt", [i for v in chosen for i in items[v][1:]]
            )
    return {"images": image_number, "train_ids": len(train), "test_ids": len(test)}


WEB_PHOTO_VIEWS = ("side", "front_three_quarter", "rear_three_quarter")


def web_photo_shot(world: SynthWorld, camera: int, rng: np.random.Generator) -> Shot:
    """A fine-grained set's framing (Stanford Cars, CompCars' web photos): the car centred and
    filling the frame, unoccluded, from the side or three-quarters, where its model shows."""
    viewpoint = WEB_PHOTO_VIEWS[int(rng.integers(len(WEB_PHOTO_VIEWS)))]
    shot = world.sample_shot(camera, rng, viewpoint)
    return replace(shot, scale=float(rng.uniform(0.85, 0.97)), dx=0.0, occluder_seed=None)


def write_vfr(
    root: Path,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (64, 64),
    n_cameras: int = 20,
    n_train_per_class: int = 30,
    n_test_per_class: int = 8,
) -> dict[str, int]:
    """Fine-grained classification as an ImageFolder tree: {train,test}/<make_model>/*.jpg,
    framed as web photos (:func:`web_photo_shot`) under the cameras' light and noise."""
    _require_positive(n_train_per_class=n_train_per_class, n_test_per_class=n_test_per_class)
    world = SynthWorld(seed, n_cameras=n_cameras)
    rng = np.random.default_rng(dataset_seed(seed, "vfr"))
    counts = {"train": 0, "test": 0}
    with _staged(root) as out:
        for model in world.models:
            for split, n in (("train", n_train_per_class), ("test", n_test_per_class)):
                for k in range(n):
                    ident = world.make_identity(
                        k, model.index, int(rng.integers(len(VERI_COLORS))), rng
                    )
                    camera = int(rng.integers(n_cameras))
                    shot = web_photo_shot(world, camera, rng)
                    render = world.render(ident, camera, rng, image_size, shot=shot)
                    _save(render, out / split / model.name / f"{model.name}_{k:05d}.jpg")
                    counts[split] += 1
        _write_lines(out / "classes.txt", [m.name for m in world.models])
    return counts


def ignore_boundaries(mask: np.ndarray) -> np.ndarray:
    """Mark pixels whose 4-neighbourhood crosses a part boundary as 255 (ignored in the metric)."""
    out = mask.copy()
    edge = np.zeros(mask.shape, dtype=bool)
    edge[1:, :] |= mask[1:, :] != mask[:-1, :]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    out[edge & (mask > 0)] = 255
    return out


def write_vps(
    root: Path,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (64, 64),
    n_cameras: int = 20,
    n_train: int = 240,
    n_val: int = 80,
) -> dict[str, int]:
    """Part segmentation: images/{train,val}/*.jpg, masks/{train,val}/*.png, classes.txt."""
    _require_positive(n_train=n_train, n_val=n_val)
    world = SynthWorld(seed, n_cameras=n_cameras)
    rng = np.random.default_rng(dataset_seed(seed, "vps"))
    identities = world.sample_identities(n_train + n_val, rng)
    with _staged(root) as out:
        for k, ident in enumerate(identities):
            split = "train" if k < n_train else "val"
            render = world.render(ident, int(rng.integers(n_cameras)), rng, image_size)
            _save(render, out / "images" / split / f"{k:06d}.jpg")
            mask_path = out / "masks" / split / f"{k:06d}.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ignore_boundaries(render.mask)).save(mask_path)
        _write_lines(out / "classes.txt", list(PART_CLASSES))
    return {"train": n_train, "val": n_val}


def write_pool(
    root: Path,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (64, 64),
    n_cameras: int = 20,
    n_images: int = 4000,
    n_identities: int = 600,
    dup_run_mean: float = 3.0,
) -> dict[str, int]:
    """The unlabeled pre-training pool: images/, captions.csv and the hidden attributes.csv.

    Long-tailed (a few colour/type pairs dominate) and full of near-duplicate frame runs: a
    vehicle tracked by one camera for a few frames with tiny jitter, as raw traffic video gives.
    """
    _require_positive(n_images=n_images, n_identities=n_identities, dup_run_mean=dup_run_mean)
    world = SynthWorld(seed, n_cameras=n_cameras)
    rng = np.random.default_rng(dataset_seed(seed, "pool"))
    identities = world.sample_identities(n_identities, rng, long_tail=True)
    rows: list[dict[str, object]] = []
    with _staged(root) as out:
        track = 0
        while len(rows) < n_images:
            ident = identities[int(rng.integers(len(identities)))]
            cam = int(rng.integers(n_cameras))
            run = min(int(rng.geometric(1.0 / dup_run_mean)), n_images - len(rows))
            shot = world.sample_shot(cam, rng)
            for _ in range(run):
                render = world.render(ident, cam, rng, image_size, shot=shot)
                shot = shot.jitter(rng)
                name = f"{len(rows):07d}.jpg"
                _save(render, out / "images" / name)
                rows.append(
                    {
                        "image": f"images/{name}",
                        "caption": world.caption(ident, render.viewpoint),
                        "color": VERI_COLORS[ident.color],
                        "type": VERI_TYPES[ident.type],
                        "model": world.models[ident.model].name,
                        "identity": ident.vid,
                        "camera": cam,
                        "viewpoint": render.viewpoint,
                        "track": track,
                    }
                )
            track += 1
        _write_csv(out / "captions.csv", ["image", "caption"], rows)
        _write_csv(
            out / "attributes.csv",
            [
                "image",
                "color",
                "type",
                "model",
                "identity",
                "camera",
                "viewpoint",
                "track",
            ],
            rows,
        )
    return {"images": len(rows), "tracks": track}


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
