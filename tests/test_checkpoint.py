"""Checkpoint files: atomic writes, errors that name the file, RNG capture, config comparison."""

import os
import random
import stat

import numpy as np
import pytest
import torch

from cgdmae.pretrain.checkpoint import (
    REQUIRED_KEYS,
    CheckpointError,
    atomic_write,
    config_differences,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def test_a_failed_write_leaves_the_previous_file_and_no_temp_file(tmp_path):
    path = tmp_path / "log.csv"
    atomic_write(path, lambda f: f.write(b"old"))

    def half_then_fail(f):
        f.write(b"half of the new content")
        raise KeyboardInterrupt  # e.g. the job is killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]


def test_written_files_get_the_umask_permissions_not_owner_only(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a", lambda f: f.write(b"x"))
        os.umask(0o077)
        atomic_write(tmp_path / "b", lambda f: f.write(b"x"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o644  # readable by the group
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600


def test_round_trip_and_errors_name_the_file(tmp_path):
    state = {key: 0 for key in REQUIRED_KEYS} | {"model": {"w": torch.arange(3.0)}}
    path = tmp_path / "checkpoint.pth"
    save_checkpoint(state, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.arange(3.0))

    save_checkpoint({k: v for k, v in state.items() if k not in ("optimizer", "step")}, path)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pth: missing key\(s\) optimizer, step"):
        load_checkpoint(path)

    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pth: cannot be read"):
        load_checkpoint(path)


def test_rng_state_restores_every_generator():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_config_differences_name_dotted_keys_and_values():
    saved = {"epochs": 400, "distill": {"lambda": 1.0, "w_kl": 0.1}, "seed": 0}
    current = {"epochs": 800, "distill": {"lambda": 1.0, "w_kl": 0.2}, "gpus": 2, "seed": 0}
    assert config_differences(saved, current) == [
        "distill.w_kl: 0.1 -> 0.2",
        "epochs: 400 -> 800",
        "gpus: None -> 2",
    ]
    assert config_differences(saved, dict(saved)) == []
