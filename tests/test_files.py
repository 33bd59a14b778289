"""Every output goes through one writer: atomic, and readable by the group under the umask."""

import os
import stat

import pytest

from cgdmae.data.synth.contact_sheet import write_contact_sheet
from cgdmae.files import atomic_write, write_json
from cgdmae.models import create_mae, save_encoder
from cgdmae.pretrain.cli import remove_stale_temp_files
from cgdmae.training.checkpoint import save_checkpoint


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_outputs_follow_the_umask(tmp_path, umask_022):
    write_json(tmp_path / "metrics.json", {"map": 1.0})
    save_encoder(create_mae("tiny", img_size=16, patch_size=8, embed_dim=16, depth=1,
                            num_heads=2, decoder_dim=16, decoder_depth=1, decoder_heads=2),
                 tmp_path / "encoder.pth")  # fmt: skip
    save_checkpoint({"step": 1}, tmp_path / "checkpoint.pth")
    write_contact_sheet(tmp_path / "sheet.png", seed=0, image_size=(16, 16), n_cameras=2)
    for name in ("metrics.json", "encoder.pth", "checkpoint.pth", "sheet.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.pth", "encoder.pth", "metrics.json", "sheet.png"
    ]  # fmt: skip


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"map": 1.0})

    def crash(f):
        f.write(b"{")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text() == '{\n  "map": 1.0\n}' and len(list(tmp_path.iterdir())) == 1


def test_temp_files_of_a_killed_writer_are_found_by_the_cleanup(tmp_path, monkeypatch):
    """The writer's temp names are those a retry's cleanup removes (`.<name>.*.tmp`)."""
    temps = []

    def record_then_fail(src, dst):
        temps.append(os.path.basename(src))
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", record_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_json(tmp_path / "metrics.json", {"map": 1.0})
    monkeypatch.undo()
    assert not list(tmp_path.iterdir())  # a failed write removes its own temp file
    (tmp_path / temps[0]).write_text("{")  # what a SIGKILL before the rename leaves
    assert temps[0].startswith(".metrics.json.") and temps[0].endswith(".tmp")
    assert remove_stale_temp_files(tmp_path) == [tmp_path / temps[0]]
    assert not list(tmp_path.iterdir())
