"""Reduced-size JPEG decoding (``pretrain.decode_draft``): a crop that spans at least f × the
output is decoded at 1/f, the view stays close to a full decode's, the teacher-target store is
made from the very pixels the student sees, and the config keeps the two stores apart."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cgdmae.data import DatasetFormatError, load_rgb
from cgdmae.pretrain.data import (
    Crop,
    PretrainDataset,
    TeacherTargets,
    apply_crop,
    draft_factor,
    load_for_crop,
    normalize,
)
from cgdmae.teacher.targets import TargetViews

SIZE = (16, 16)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Smooth 160×120 JPEGs (a photo's spectrum) and one PNG."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for k in range(4):
        coarse = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8))
        photo = coarse.resize((160, 120), Image.Resampling.BICUBIC)
        paths.append(root / f"{k}.jpg")
        photo.save(paths[-1], quality=92)
    photo.save(root / "4.png")
    return [*paths, root / "4.png"]


def test_the_reduction_is_the_largest_at_which_the_crop_still_spans_the_output():
    assert draft_factor(Crop(0, 0, 130, 140, False), SIZE) == 8
    assert draft_factor(Crop(0, 0, 127, 140, False), SIZE) == 4
    assert draft_factor(Crop(0, 0, 40, 100, False), SIZE) == 2
    assert draft_factor(Crop(0, 0, 31, 100, False), SIZE) == 1


def test_a_big_crop_decodes_reduced_and_stays_close_to_the_full_decode(photos):
    crop = Crop(10, 20, 100, 120, True)
    image, got, factor, stored = load_for_crop(photos[0], lambda w, h: crop, SIZE, draft=True)
    assert (got, factor, stored, image.size) == (crop, 4, (160, 120), (40, 30))
    reduced = apply_crop(image, crop, SIZE, factor)
    full = apply_crop(load_rgb(photos[0]), crop, SIZE)
    assert reduced.shape == full.shape and (reduced - full).abs().mean() < 0.02
    assert not torch.equal(reduced, full)
    image, _, factor, _ = load_for_crop(photos[0], lambda w, h: crop, SIZE, draft=False)
    assert factor == 1 and torch.equal(apply_crop(image, crop, SIZE, factor), full)
    image, _, factor, _ = load_for_crop(photos[4], lambda w, h: crop, SIZE, draft=True)
    assert factor == 1 and image.size == (160, 120)  # a PNG always decodes in full


def test_the_student_sees_the_pixels_its_cached_teacher_view_was_made_from(photos):
    views = TargetViews(photos, 6, SIZE, (0.05, 1.0), seed=3, draft=True)
    items = [views[i] for i in range(len(photos))]
    factors = {draft_factor(Crop(*row[:4].tolist(), bool(row[4])), SIZE)
               for _, rows, _ in items for row in rows}  # fmt: skip
    assert len(factors) >= 2  # views of one image decoded at different reductions
    crops = torch.stack([rows for _, rows, _ in items])
    targets = TeacherTargets([str(p) for p in photos], crops, torch.zeros(5, 6, 4).half(),
                             SIZE, (0.05, 1.0), draft=True)  # fmt: skip
    student = PretrainDataset(photos, img_size=SIZE, scale=(0.05, 1.0), targets=targets,
                              draft=True)  # fmt: skip
    for epoch in range(4):
        student.set_epoch(epoch)
        for i, (_, _, made) in enumerate(items):
            image = student[i]["image"]  # one of the teacher's views, pixel for pixel
            assert any(torch.equal(normalize(view), image) for view in made)
    with pytest.raises(DatasetFormatError, match=r"reduced-size JPEG decodes; this run decodes "):
        PretrainDataset(photos, img_size=SIZE, scale=(0.05, 1.0), targets=targets)


def test_a_draft_run_has_its_own_target_store_and_person_methods_refuse_it(tmp_path):
    from test_workflow_data import TINY

    from cgdmae.config import SCHEMA, ConfigError, run_spec, targets_file, validate_config

    config = yaml.safe_load(TINY.read_text())
    config["runs"] = {
        "cgd_mae": {"method": "cgd_mae"},
        "cgd_mae_draft": {"method": "cgd_mae", "overrides": {"decode_draft": True}},
    }
    config["ablations"] = {}
    config = validate_config(config, SCHEMA)
    plain, draft = (targets_file(config, run_spec(config, r)) for r in config["runs"])
    assert plain.endswith("_s0.2-1.pt") and draft == plain.replace(".pt", "_draft.pt")
    assert "decode_draft" not in run_spec(config, "cgd_mae")  # the plain run's spec is unchanged
    bad = yaml.safe_load(TINY.read_text())
    bad["runs"] = {"pm": {"method": "person_mae", "overrides": {"decode_draft": True}}}
    bad["ablations"] = {}
    with pytest.raises(ConfigError, match=r"runs\.pm\.overrides\.decode_draft"):
        validate_config(bad, SCHEMA)


def test_the_dag_makes_the_draft_store_for_the_draft_run(tmp_path):
    from test_workflow_data import TINY, snakemake

    config = yaml.safe_load(TINY.read_text())
    config["runs"] = {"cgd_mae_draft": {"method": "cgd_mae", "overrides": {"decode_draft": True}}}
    config["ablations"] = {}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    dry = snakemake(tmp_path, "--configfile", str(tmp_path / "c.yaml"), "-n",
                    "results/pretrain/cgd_mae_draft/encoder.pth")  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "k2_32x32_s0.2-1_draft.pt" in dry.stdout and "decode=_draft" in dry.stdout
