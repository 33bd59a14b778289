"""Datasets are checked before any job is submitted: a broken layout stops the run, naming
the config key and the file."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_readers import jpg, seg_tree, truncate, vehicleid_tree, veri_tree, veriwild_tree, write

from cgdmae.config import ConfigError, check_datasets

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def real_format_tree(fmt: str, root: Path) -> Path:
    """A tiny dataset in ``fmt``'s on-disk layout, which passes ``check_datasets``."""
    if fmt == "veri776":
        return veri_tree(root)
    if fmt == "vehicleid":
        return vehicleid_tree(root)
    if fmt == "veriwild":
        return veriwild_tree(root)
    if fmt == "segmentation":
        return seg_tree(root)
    if fmt == "image_folder":
        for split in ("train", "test"):
            for name in ("sedan", "suv"):
                jpg(root / split / name / "1.jpg")
        return root
    if fmt == "pool":
        jpg(root / "images" / "000001.jpg")
        write(root / "captions.csv", "image,caption\nimages/000001.jpg,a red sedan\n")
        return root
    raise ValueError(fmt)


@pytest.mark.parametrize(
    "fmt", ["veri776", "vehicleid", "veriwild", "segmentation", "image_folder", "pool"]
)
def test_each_format_is_checked(tmp_path, fmt):
    root = real_format_tree(fmt, tmp_path / fmt)
    config = {"datasets": {"d": {"format": fmt, "path": str(root)}}}
    check_datasets(config)
    (tmp_path / "empty").mkdir()
    config["datasets"]["d"]["path"] = str(tmp_path / "empty")
    with pytest.raises(ConfigError, match=f"config key 'datasets.d.path': {tmp_path}/empty"):
        check_datasets(config)


def config_with(veri: Path) -> dict:
    return {
        "datasets": {
            "veri776": {"format": "veri776", "path": str(veri)},
            # written by a rule of the DAG: not there yet when the config is read
            "vehicleid": {"format": "vehicleid", "path": "results/data/synthetic/vehicleid"},
        }
    }


def test_a_good_layout_passes_without_decoding_images(tmp_path):
    veri = veri_tree(tmp_path / "VeRi")
    truncate(next((veri / "image_test").iterdir()))  # decoding is the image scan's job
    check_datasets(config_with(veri))


def test_a_missing_list_names_the_config_key_and_the_file(tmp_path):
    veri = veri_tree(tmp_path / "VeRi")
    (veri / "name_query.txt").unlink()
    with pytest.raises(ConfigError) as err:
        check_datasets(config_with(veri))
    message = str(err.value)
    assert message.startswith("config key 'datasets.veri776.path': ")
    assert str(veri / "name_query.txt") in message and "has no name_query.txt" in message


def test_a_listed_image_that_is_not_there_is_named(tmp_path):
    veri = veri_tree(tmp_path / "VeRi")
    missing = next((veri / "image_train").iterdir())
    missing.unlink()
    with pytest.raises(ConfigError, match=f"datasets.veri776.path': {veri}/name_train.txt:"):
        check_datasets(config_with(veri))
    jpg(missing)
    check_datasets(config_with(veri))


def test_snakemake_stops_before_any_job(tmp_path):
    """The dry run itself fails, in one line naming the key: no job is ever submitted."""
    veri = veri_tree(tmp_path / "VeRi")
    (veri / "name_query.txt").unlink()
    tiny = yaml.safe_load(TINY.read_text())
    extra = tmp_path / "real_veri.yaml"
    extra.write_text(
        yaml.safe_dump(
            {"datasets": {"veri776": {**tiny["datasets"]["veri776"], "path": str(veri)}}}
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(TINY), str(extra)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "config key 'datasets.veri776.path'" in result.stderr, result.stderr[-2000:]
    assert str(veri / "name_query.txt") in result.stderr
    assert not (tmp_path / "results").exists()
