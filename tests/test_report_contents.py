"""The report shows exactly the runs of its config, not whatever else lies in results/."""

import json
import shutil
from pathlib import Path

import pytest

from cgdmae.report.notebook import render_report

ROOT = Path(__file__).resolve().parents[1]


def fake_results(root: Path) -> None:
    """results/ as two configs leave it: runs mine_mae (this config) and other_run (another)."""
    results = root / "results"
    (results / "tables").mkdir(parents=True)
    (results / "tables" / "main.md").write_text("| run | mAP |\n|---|---|\n| mine_mae | 1.0 |\n")
    (results / "tables" / "main.tex").write_text("% config: config/mine.yaml\n")
    (results / "tables" / "ablation_other_axis.md").write_text("| other_ablation_row |\n")
    for run, loss, sha in (("mine_mae", 0.5, "feedbeef"), ("other_run", 0.25, "deadbeef")):
        log = results / "pretrain" / run / "log.csv"
        log.parent.mkdir(parents=True)
        log.write_text(f"epoch,loss,img_per_s\n1,{loss + 1},10\n2,{loss},11\n")
        record = {
            "metrics": {"test": {"mAP": 0.5, "rank1": 0.75}},
            "num_train": 7,
            "num_test": 3,
            "encoder_sha256": f"{sha}0123456789",
            "wall_seconds": 1.0,
        }
        path = results / "finetune" / run / "reid" / "veri776" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record))
    stats = results / "curation" / "other_subset" / "stats.json"
    stats.parent.mkdir(parents=True)
    stats.write_text("{}")  # another config's subset: not even read


@pytest.fixture
def notebook(tmp_path):
    paper = tmp_path / "paper"
    paper.mkdir()
    shutil.copy(ROOT / "paper" / "report.ipynb", paper)
    return paper / "report.ipynb"


def test_report_shows_only_its_configs_runs(tmp_path, notebook):
    fake_results(tmp_path)
    contents = {
        "runs": ["mine_mae"],
        "curation": [],
        "ablations": [],
        "finetune": [["mine_mae", "reid", "veri776"]],
    }
    html = tmp_path / "report.html"
    render_report(notebook, html, root=tmp_path, contents=contents)
    text = html.read_text()
    assert "mine_mae" in text and "feedbeef" in text  # its log and its fine-tuning record
    for other in ("other_run", "deadbeef", "other_axis", "other_ablation_row", "other_subset"):
        assert other not in text, other


def test_report_opened_without_a_config_shows_what_it_finds(tmp_path, notebook):
    fake_results(tmp_path)
    (tmp_path / "results" / "curation").rename(tmp_path / "elsewhere")  # no stats to read
    html = tmp_path / "report.html"
    render_report(notebook, html, root=tmp_path)
    text = html.read_text()
    assert "feedbeef" in text and "deadbeef" in text and "other_run" in text
    assert "other_ablation_row" in text


def test_tables_report_the_smallest_test_list_whatever_the_files_key_order():
    """metrics.json is written with sorted keys (test1600, test2400, test800): VehicleID's
    column is still its 800 list, VERI-Wild's its 3000 list, VeRi-776's its one test set."""
    from cgdmae.report.tables import columns_for, primary_protocol

    record = json.loads(json.dumps({
        "metrics": {"test800": {"rank1": 0.3}, "test1600": {"rank1": 0.2}, "test2400": {"rank1": 0.1}},
        "per_seed": {"0": {"test800": {"rank1": 0.3}, "test1600": {"rank1": 0.2},
                           "test2400": {"rank1": 0.1}}},
    }, sort_keys=True))  # fmt: skip
    assert list(record["metrics"]) == ["test1600", "test2400", "test800"]
    r1 = next(c for c in columns_for([("reid", "vehicleid")]) if c.metric == "rank1")
    assert r1.values(record) == [30.0]
    assert primary_protocol(["test10000", "test3000", "test5000"]) == "test3000"
    assert primary_protocol(["test"]) == "test"
