"""MedSyn's tables driver: per-seed folders collect into mean [t-interval] cells, the baseline is
counted once per seed, job locks are exclusive, bad choices stop before any stage runs."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from benchmarks import medsyn_tables as bench


def _dense(folder, task, name, seed, score, base):
    metric = "dice" if task == "segment" else "map"
    rows = [
        {"fraction": f, "seed": seed, "scores": {metric: score + f}, "baseline": {metric: base + f}} for f in (0.1, 1.0)
    ]
    folder.mkdir(parents=True)
    (folder / bench.TASKS[task]).write_text(json.dumps({"encoders": {name: {"rows": rows}}}))


def test_paired_seed_folders_collect_into_mean_and_t_interval(tmp_path):
    scores = {"mae": [0.30, 0.36, 0.33], "random-init": [0.20, 0.25, 0.21]}
    for name, values in scores.items():
        for seed, value in enumerate(values):
            _dense(tmp_path / "segment" / name / f"seed{seed}", "segment", name, seed, value, 0.1 * seed)
        probe = tmp_path / "probe" / name / "seed0"
        probe.mkdir(parents=True)
        rows = [{"encoder": name, "fraction": 1.0, "seed": 0, "probe_auc": 0.7}]
        (probe / bench.TASKS["probe"]).write_text(json.dumps({"rows": rows}))
    tables = bench.collect(tmp_path)
    seg = tables["segmentation Dice (pooled)"]
    assert list(seg) == ["random-init", "mae", "mean-mask baseline"]  # ENCODERS order, baseline last
    cell = seg["mae"][0.1]
    v = np.array(scores["mae"]) + 0.1
    half = stats.t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
    assert cell["n"] == 3 and cell["mean"] == pytest.approx(v.mean(), abs=1e-4)
    assert cell["ci95"] == pytest.approx([v.mean() - half, v.mean() + half], abs=1e-4)
    base = seg["mean-mask baseline"][1.0]  # one value per seed, not one per encoder and seed
    assert base["n"] == 3 and base["mean"] == pytest.approx(1.1, abs=1e-4)
    assert tables["linear probe AUC"]["mae"][1.0]["n"] == 1
    assert tables["detection mAP@[0.40:0.75]"] == {}
    assert "| mae |" in bench.markdown(tables)
    diff = bench.paired_differences(tmp_path)["segment"]["mae - random-init"][0.1]  # per seed, then the interval
    d = np.array(scores["mae"]) - np.array(scores["random-init"])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert diff["ci95"] == pytest.approx([d.mean() - half, d.mean() + half], abs=1e-4)


def test_job_locks_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    lock = tmp_path / "claims" / "segment-mae-seed0"
    assert bench._claim(lock) and lock.read_text() == str(os.getpid())
    assert not bench._claim(lock)  # held by a live process (this one)
    lock.write_text("999999999")  # a process id that does not exist: a crashed worker
    assert bench._claim(lock) and lock.read_text() == str(os.getpid())


@pytest.mark.parametrize(
    "argv",
    [["--encoders", "not-an-encoder"], ["--stages", "train"], ["--dense_steps", "0"], ["--seeds", "-1"]],
)
def test_bad_choices_stop_before_any_stage(tmp_path, argv):
    with pytest.raises(SystemExit) as err:
        bench.main(["--out", str(tmp_path / "run"), *argv])
    assert err.value.code == 2
    assert not (tmp_path / "run").exists()


def test_every_encoder_row_pairs_its_pretraining_seed(tmp_path, monkeypatch):
    """Seed s pre-trains into towers/<encoder>/seed<s>, and the scoring run of seed s reads that tower."""
    calls = []
    monkeypatch.setattr(bench, "_cli", lambda argv, log=None: calls.append(argv))
    (tmp_path / "dense-10").mkdir()
    (tmp_path / "dense-10" / "dataset_dict.json").write_text("{}")
    cfg = bench.argparse.Namespace(dense_steps=5, detect_steps=5, dense_train=10)
    for name in ("random-init", "mae", "resnet-mocov2-real"):
        tower = bench._tower(tmp_path, name, 2)
        assert tower == tmp_path / "towers" / name / "seed2"
        bench.eval_job(tmp_path, "segment", name, 2, cfg)()
        argv = calls[-1]
        assert argv[argv.index("--model") + 1] == f"{name}={tower}"
        assert argv[argv.index("--seeds") + 1] == "2"
