"""benchmarks/bench_pretraining_curve.py (issue 34 item 1): a long run's checkpoints become exact model
folders, the probe rows are averaged per (run, steps, fraction), the fine-tuned points come from the
protocol's pooled rows, and bad options stop before any compute."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_pretraining_curve as curve  # noqa: E402


def _tiny_mae_run(folder: Path) -> torch.nn.Module:
    """A finished tiny MAE run: ``make_encoder``'s folder (its ``checkpoint-10`` holds no weights) and a
    run config of 30 steps; returns the final model."""
    from transformers import ViTMAEForPreTraining

    from _publish_artifacts import make_encoder

    make_encoder(folder)
    (folder / "run_config.json").write_text(json.dumps({"args": {"max_steps": None}, "derived": {"total_steps": 30}}))
    return ViTMAEForPreTraining.from_pretrained(str(folder))


def test_checkpoints_become_exact_model_folders(tmp_path):
    from safetensors.torch import save_file
    from transformers import ViTMAEForPreTraining

    run = tmp_path / "long" / "model"
    model = _tiny_mae_run(run)
    # an earlier checkpoint as the trainer writes it: the in-memory module's state dict
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = next(k for k in state if k.endswith("patch_embeddings.projection.weight"))
    state[key] += 1.0
    for folder in (run / "checkpoint-20", tmp_path / "long" / "snapshots" / "step_10"):
        folder.mkdir(parents=True)
        save_file(state, str(folder / "model.safetensors"))
    (tmp_path / "long" / "snapshots" / "step_5").mkdir()  # copy not finished: no weights, not listed
    assert list(curve.checkpoint_weights(run)) == [10, 20] and curve.final_step(run) == 30
    out = curve.encoder_from_checkpoint(run, curve.checkpoint_weights(run)[10], tmp_path / "enc")
    loaded = ViTMAEForPreTraining.from_pretrained(str(out)).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert not torch.equal(loaded[key], model.state_dict()[key])  # the checkpoint's, not the final weights
    assert (out / "preprocessor_config.json").read_text() == (run / "preprocessor_config.json").read_text()
    bad = tmp_path / "bad.safetensors"
    save_file({"not.a.weight": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="does not fit"):
        curve.encoder_from_checkpoint(run, bad, tmp_path / "enc2")


def test_probe_rows_average_seeds_and_finetuned_points_come_from_the_pooled_rows():
    table = {
        "rows": [
            {"encoder": "A @ 0", "fraction": 0.1, "seed": s, "probe_auc": p, "knn_auc": k}
            for s, p, k in ((0, 0.6, 0.5), (1, 0.8, 0.7))
        ]
        + [{"encoder": "A @ 100", "fraction": 0.1, "seed": 0, "probe_auc": 0.9, "knn_auc": 0.85}]
    }
    rows = curve.probe_rows(table, {"A @ 0": ("A", 0), "A @ 100": ("A", 100)})
    assert [
        (r["steps"], round(r["probe_auc"], 6), r["probe_auc_min"], r["probe_auc_max"], r["seeds"]) for r in rows
    ] == [
        (0, 0.7, 0.6, 0.8, 2),
        (100, 0.9, 0.9, 0.9, 1),
    ]
    assert round(rows[0]["knn_auc"], 6) == 0.6
    pooled = [
        {"arm": "genssl_10k", "fraction": f, "mean": 0.9, "min": 0.8, "max": 0.95, "seeds": [0, 1, 2]}
        for f in (0.01, 0.1)
    ]
    points = curve.finetuned_points(pooled, {"A": [("genssl_10k", 10000)]})
    assert [(p["run"], p["steps"], p["fraction"], p["seeds"]) for p in points] == [
        ("A", 10000, 0.01, 3),
        ("A", 10000, 0.1, 3),
    ]
    with pytest.raises(ValueError, match="arm 'nope' is in none"):
        curve.finetuned_points(pooled, {"A": [("nope", 5)]})


def test_bad_options_stop_before_any_compute(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").write_text("{}")
    base = ["--dataset", str(tmp_path), "--output-dir", str(tmp_path / "out")]
    for bad, message in (
        (["--run", "A"], "--run: expected NAME=VALUE"),
        (["--run", f"A={tmp_path}"], "not a finished run folder"),
        (["--run", f"A={run}", "--finetuned", "B=x@1"], "no --run of that name"),
        (["--run", f"A={run}", "--finetuned", "A=x@y", "--pooled", "p"], "expected ARM@STEPS"),
        (["--run", f"A={run}", "--finetuned", "A=x@1"], "--finetuned needs --pooled"),
    ):
        with pytest.raises(SystemExit):
            curve.main([*base, *bad])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
