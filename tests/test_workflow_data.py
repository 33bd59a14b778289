"""Workflow tests: the data rules on the tiny config, read back by the real readers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cgdmae.data import (
    read_image_folder,
    read_pool,
    read_segmentation,
    read_vehicleid,
    read_veri776,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def snakemake(workdir: Path, *args: str, warm: bool = False) -> subprocess.CompletedProcess:
    """Snakemake in ``workdir``; with ``warm``, under a warm server as `make demo` runs it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    wrapper = [sys.executable, "-m", "cgdmae.warm", "--"] if warm else []
    return subprocess.run(
        [*wrapper, *SNAKEMAKE, "--directory", str(workdir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,  # the tiny DAG takes ~5 min alone; a loaded CI machine, far longer
    )


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("tiny")
    targets = [
        f"results/data/synthetic/{name}" for name in ("veri776", "vehicleid", "vfr", "vps", "pool")
    ]
    result = snakemake(
        workdir,
        "--configfile",
        str(TINY),
        "--cores",
        "2",
        *targets,
        "results/figures/synth_contact_sheet.png",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir / "results" / "data" / "synthetic"


def test_readers_round_trip_the_synthetic_datasets(tiny_data):
    veri = read_veri776(tiny_data / "veri776", check_images=True)
    assert (len(veri.train), len(veri.query), len(veri.gallery)) == (6 * 4, 4 * 1, 4 * 4)
    assert {r.pid for r in veri.query} <= {r.pid for r in veri.gallery}
    assert not {r.pid for r in veri.train} & {r.pid for r in veri.gallery}
    assert all(r.color >= 0 and r.type >= 0 for r in veri.train + veri.query + veri.gallery)
    train, test = read_vehicleid(tiny_data / "vehicleid", 2400, check_images=True)
    assert len({r.pid for r in train}) == 6 and len({r.pid for r in test}) == 4
    vfr = read_image_folder(tiny_data / "vfr", "test", check_images=True)
    assert len(vfr.classes) >= 30 and len(vfr.records) == len(vfr.classes)
    vps = read_segmentation(tiny_data / "vps", "val", num_classes=6, check_images=True)
    assert len(vps.records) == 4
    pool = read_pool(tiny_data / "pool", check_images=True)
    assert len(pool) == 120 and all(r.caption.startswith("a photo of") for r in pool)


def test_second_run_has_nothing_to_do(tiny_data):
    workdir = tiny_data.parents[2]
    result = snakemake(workdir, "--configfile", str(TINY), "-n", "results/data/synthetic/veri776")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_bad_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("n_cameras: 6", "n_camera: 6"))
    result = snakemake(tmp_path, "--configfile", str(bad), "--cores", "1")
    assert result.returncode != 0
    assert "unknown config key 'synthetic.n_camera'" in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("target", ["demo", "paper"])
def test_make_targets_hand_their_goals_to_snakemake(tmp_path, target):
    """`make demo` and `make paper` reach Snakemake with their targets intact (a target after a
    multi-value option such as --configfile would be read as one more config file)."""
    flags = f"-n --snakefile {ROOT / 'Snakefile'} --directory {tmp_path}"
    result = subprocess.run(
        ["make", "-C", str(ROOT), "-o", ".venv/.installed", target,
         f"BIN={Path(sys.executable).parent}", f"CONFIGFILE={TINY}", f"SNAKEMAKE_FLAGS={flags}"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rule pretrain:" in result.stdout and "rule report:" in result.stdout
