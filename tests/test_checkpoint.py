"""Checkpoint files: atomic writes, errors that name the file, RNG capture, config comparison."""

import logging
import os
import random
import stat

import numpy as np
import pytest
import torch

from cgdmae.training.checkpoint import (
    REQUIRED_KEYS,
    CheckpointError,
    atomic_write,
    config_differences,
    load_checkpoint,
    load_resumable,
    rng_state,
    save_checkpoint,
    set_aside,
    set_aside_if_stale,
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


def test_rng_state_survives_a_weights_only_load_exactly(tmp_path):
    """Tensors and plain lists only; cached Gaussians (Python's and NumPy's) come back too."""
    random.seed(5), np.random.seed(5)
    random.gauss(0, 1), np.random.standard_normal()  # each now holds a cached second value
    state = rng_state()
    assert random.getstate()[2] is not None and np.random.get_state()[3] == 1
    torch.save(state, tmp_path / "rng.pth")
    loaded = torch.load(tmp_path / "rng.pth", weights_only=True)
    draws = (random.gauss(0, 1), random.random(), np.random.standard_normal(), np.random.rand())
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    set_rng_state(loaded)
    again = (random.gauss(0, 1), random.random(), np.random.standard_normal(), np.random.rand())
    assert draws == again
    set_rng_state(loaded)
    version, internal, gauss_next = state["python"]
    assert random.getstate() == (version, tuple(internal), gauss_next)
    name, key, *rest = np.random.get_state()
    assert [name, key.tolist(), *rest] == state["numpy"]
    assert torch.equal(torch.get_rng_state(), state["torch"])


CORRUPT = {
    "empty": (b"", r"cannot be read as a checkpoint \(the file is empty\)"),
    "truncated": (None, r"cannot be read as a checkpoint \(PytorchStreamReader failed"),
    "not a checkpoint": (b"not a checkpoint", r"cannot be read as a checkpoint"),
    "pickled numpy": (None, r"refused by a weights-only load: it needs numpy\."),
}


def plant(path, kind):
    data, _ = CORRUPT[kind]
    state = {key: 0 for key in REQUIRED_KEYS} | {"model": {"w": torch.arange(3.0)}}
    if kind == "pickled numpy":  # what RNG states held before they were stored as plain lists
        state["rng_ranks"] = [{"numpy": np.random.get_state()}]
    save_checkpoint(state, path)
    if kind == "truncated":
        data = path.read_bytes()[:200]
    if data is not None:
        path.write_bytes(data)


@pytest.mark.parametrize("kind", CORRUPT)
def test_an_unloadable_checkpoint_is_an_error_naming_the_file(tmp_path, kind):
    path = tmp_path / "checkpoint.pth"
    plant(path, kind)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pth: " + CORRUPT[kind][1]) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(str(path))
    assert "\n" not in str(err.value)  # one line, not torch's advice to load it unsafely


@pytest.mark.parametrize("kind", CORRUPT)
def test_before_a_resume_an_unloadable_checkpoint_is_set_aside(tmp_path, kind, caplog):
    """Renamed, never deleted, and logged: a retried job starts over instead of failing again."""
    for check in (lambda p: set_aside_if_stale(p, {}), load_resumable):
        path = tmp_path / "checkpoint.pth"
        plant(path, kind)
        content = path.read_bytes()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cgdmae.training.checkpoint"):
            assert check(path) is None
        assert not path.exists()
        aside = sorted(tmp_path.glob("checkpoint.corrupt-*.pth"), key=os.path.getmtime)[-1]
        assert aside.read_bytes() == content
        assert f"{path}: " in caplog.text and f"kept it as {aside}, starting over" in caplog.text
    assert len(list(tmp_path.glob("checkpoint.corrupt-*.pth"))) == 2  # no name reused


def test_a_readable_checkpoint_is_resumed_and_a_stale_one_kept_apart(tmp_path, caplog):
    path = tmp_path / "checkpoint.pth"
    state = {key: 0 for key in REQUIRED_KEYS} | {"config": {"epochs": 4}}
    save_checkpoint(state, path)
    set_aside_if_stale(path, {"epochs": 4})
    assert load_resumable(path)["config"] == {"epochs": 4}
    with caplog.at_level(logging.WARNING, logger="cgdmae.training.checkpoint"):
        set_aside_if_stale(path, {"epochs": 8})
    [aside] = tmp_path.glob("checkpoint.stale-*.pth")
    assert not path.exists()
    assert f"the config changed since {path} was written; kept it as {aside}" in caplog.text


def test_a_checkpoint_another_rank_set_aside_first_is_not_an_error(tmp_path):
    """Every DDP rank runs the check; the ranks that find the file gone carry on."""
    assert set_aside(tmp_path / "checkpoint.pth", "corrupt", "unreadable") is None
    assert list(tmp_path.iterdir()) == []


def test_config_differences_name_dotted_keys_and_values():
    saved = {"epochs": 400, "distill": {"lambda": 1.0, "w_kl": 0.1}, "seed": 0}
    current = {"epochs": 800, "distill": {"lambda": 1.0, "w_kl": 0.2}, "gpus": 2, "seed": 0}
    assert config_differences(saved, current) == [
        "distill.w_kl: 0.1 -> 0.2",
        "epochs: 400 -> 800",
        "gpus: None -> 2",
    ]
    assert config_differences(saved, dict(saved)) == []
