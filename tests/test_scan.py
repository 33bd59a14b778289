"""`make check-data`: every image decoded before a job runs, the bad ones named with their key."""

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cgdmae.data.scan import main, scan, without_corrupt


def write_jpeg(path, seed):
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def test_scan_names_the_corrupt_images_and_their_config_key(tmp_path):
    good = tmp_path / "veri" / "image_train"
    for k in range(3):
        write_jpeg(good / f"{k:04d}.jpg", k)
    truncated = write_jpeg(tmp_path / "pool" / "images" / "a.jpg", 7)
    truncated.write_bytes(truncated.read_bytes()[:200])  # cut mid-scan, as by a failed copy
    (tmp_path / "pool" / "images" / "b.png").write_bytes(b"not a png")
    (tmp_path / "pool" / "captions.csv").write_text("path,caption\n")  # not an image: not read
    datasets = {
        "veri776": {"format": "veri776", "path": str(tmp_path / "veri")},
        "pool": {"format": "pool", "path": str(tmp_path / "pool")},
        "later": {"format": "pool", "path": str(tmp_path / "results" / "pool")},  # not built yet
    }
    count, bad = scan(datasets, workers=2, skip_prefix=str(tmp_path / "results"))
    assert count == 5
    assert [key for key, _ in bad] == ["datasets.pool.path"] * 2
    assert "a.jpg" in bad[0][1] and "corrupt or truncated image" in bad[0][1]
    assert "b.png" in bad[1][1]


def test_check_data_exits_1_on_a_corrupt_image_and_0_once_it_is_gone(tmp_path, capsys):
    root = tmp_path / "vfr"
    write_jpeg(root / "train" / "a" / "0.jpg", 0)
    broken = root / "train" / "a" / "1.jpg"
    broken.write_bytes(b"\xff\xd8\xff")
    config = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    config["datasets"]["vfr"]["path"] = str(root)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main([str(path), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "config key 'datasets.vfr.path'" in err and "1.jpg" in err
    broken.unlink()
    assert main([str(path), "--workers", "1"]) == 0
    assert "1 images decoded, 0 corrupt" in capsys.readouterr().out


def test_on_corrupt_skip_drops_and_names_each_bad_image_and_error_reads_none(tmp_path, caplog):
    paths = [write_jpeg(tmp_path / f"{k}.jpg", k) for k in range(4)]
    paths[1].write_bytes(paths[1].read_bytes()[:150])
    pairs = [(paths[0], paths[1]), (paths[2], paths[3])]  # an item goes with any bad file
    assert without_corrupt(pairs, list, "error", "veri") == (pairs, [])  # nothing decoded
    with caplog.at_level(logging.INFO, logger="cgdmae.data.scan"):
        kept, skipped = without_corrupt(pairs, list, "skip", "datasets.veri776", workers=2)
    assert (kept, skipped) == ([pairs[1]], [pairs[0]])
    assert "1.jpg: corrupt or truncated image" in caplog.text
    assert "datasets.veri776: skipped_images 1 of 2" in caplog.text
    with pytest.raises(ValueError, match="on_corrupt must be one of error, skip, got 'ignore'"):
        without_corrupt(pairs, list, "ignore", "veri")
