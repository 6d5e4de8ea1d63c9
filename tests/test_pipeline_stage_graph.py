"""Stages side by side (``stage_workers``) and the run's time record (``timings.json``): the graph
runs a stage only after its deps, overlaps independent ones, gives the sequential results, and
fails naming the stage; every step's wall and CPU seconds land in the run folder."""

import json
import threading
import time

import pytest

from genssl_hf.pipeline import load_preset
from genssl_hf.pipeline.runner import stage_workers, with_stage_threads
from genssl_hf.pipeline.stages import TIMINGS, RunClock, Stage, run_stage, run_stage_graph


def _quiet(_message):
    pass


def _writer(events: list, value: str, deps: tuple[str, ...] = (), barrier: threading.Barrier | None = None):
    """A stage that waits at ``barrier`` (if any), then writes ``value`` plus its deps' outputs."""

    def run(folder):
        events.append(("start", folder.name))
        if barrier is not None:
            barrier.wait(timeout=20)  # both independent stages must be running at once to pass
        upstream = [(folder.parent / d / "out.txt").read_text() for d in deps]
        (folder / "out.txt").write_text("+".join([value, *upstream]))
        events.append(("end", folder.name))
        return {"value": value, "upstream": upstream}

    return run


def _jobs(events, barrier=None):
    return [
        (Stage("a", {"k": 1}, _writer(events, "a", barrier=barrier), ["out.txt"]), []),
        (Stage("b", {"k": 2}, _writer(events, "b", barrier=barrier), ["out.txt"]), []),
        (Stage("c", {"k": 3}, _writer(events, "c", ("a", "b")), ["out.txt"]), ["a", "b"]),
    ]


def test_independent_stages_overlap_and_give_the_sequential_results(tmp_path):
    seq_events, par_events = [], []
    sequential = run_stage_graph(tmp_path / "seq", _jobs(seq_events), workers=1, log=_quiet)
    parallel = run_stage_graph(tmp_path / "par", _jobs(par_events, threading.Barrier(2)), workers=2, log=_quiet)
    expected = {
        "a": {"value": "a", "upstream": []},
        "b": {"value": "b", "upstream": []},
        "c": {"value": "c", "upstream": ["a", "b"]},
    }
    assert sequential == expected and parallel == expected
    for name in "abc":
        assert (tmp_path / "par" / name / "out.txt").read_text() == (tmp_path / "seq" / name / "out.txt").read_text()
        seq_marker = json.loads((tmp_path / "seq" / name / "stage.json").read_text())
        par_marker = json.loads((tmp_path / "par" / name / "stage.json").read_text())
        assert par_marker["fingerprint"] == seq_marker["fingerprint"]
    # c started only after both of its deps had ended
    assert par_events.index(("start", "c")) > max(par_events.index(("end", "a")), par_events.index(("end", "b")))
    # a rerun with either worker count skips every stage
    logs = []
    run_stage_graph(tmp_path / "par", _jobs([]), workers=1, log=logs.append)
    assert logs and all("up to date" in line for line in logs)


def test_a_failed_stage_is_named_and_its_dependents_never_start(tmp_path):
    events = []

    def boom(folder):
        events.append(("start", folder.name))
        raise ValueError("bad input in stage a")

    def slow_ok(folder):
        time.sleep(0.3)  # still running when a fails: it is let finish
        (folder / "out.txt").write_text("b")
        events.append(("end", folder.name))
        return {}

    jobs = [
        (Stage("a", {}, boom, ["out.txt"]), []),
        (Stage("b", {}, slow_ok, ["out.txt"]), []),
        (Stage("c", {}, _writer(events, "c", ("a",)), ["out.txt"]), ["a"]),
    ]
    logs = []
    with pytest.raises(RuntimeError, match=r"stage 'a' failed; not started: \['c'\]: bad input in stage a") as err:
        run_stage_graph(tmp_path, jobs, workers=2, log=logs.append)
    assert isinstance(err.value.__cause__, ValueError)
    assert ("end", "b") in events and ("start", "c") not in events
    assert (tmp_path / "b" / "stage.json").is_file() and not (tmp_path / "a" / "stage.json").exists()
    assert any(line.startswith("[a] failed: bad input") for line in logs)


def test_bad_graphs_fail_before_any_stage_runs(tmp_path):
    events = []
    a = Stage("a", {}, _writer(events, "a"), ["out.txt"])
    c = Stage("c", {}, _writer(events, "c", ("a",)), ["out.txt"])
    with pytest.raises(ValueError, match=r"'c' depends on \['a'\], listed at or after it"):
        run_stage_graph(tmp_path, [(c, ["a"]), (a, [])], workers=2, log=_quiet)
    with pytest.raises(ValueError, match="occurs twice"):
        run_stage_graph(tmp_path, [(a, []), (a, [])], workers=2, log=_quiet)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_stage_graph(tmp_path, [(a, [])], workers=0, log=_quiet)
    assert events == []


def test_stage_threads_reach_the_stage_subprocesses_only_when_asked():
    cfg = load_preset("smoke")
    assert stage_workers(cfg) == 1 and "subprocess_env" not in with_stage_threads(cfg)
    side_by_side = with_stage_threads({**cfg, "stage_workers": 2})
    assert side_by_side["subprocess_env"] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    explicit = with_stage_threads({**cfg, "stage_workers": 2, "stage_threads": 3})
    assert explicit["subprocess_env"]["OMP_NUM_THREADS"] == "3"
    assert "subprocess_env" not in cfg  # the caller's config is left as it was
    with pytest.raises(ValueError, match="stage_threads must be >= 1"):
        load_preset("smoke", ["stage_threads=0"])


def test_training_stages_run_their_command_with_the_stage_env(tmp_path, monkeypatch):
    """The thread count set for side-by-side stages reaches the pre-training subprocess."""
    from genssl_hf.pipeline import training_steps

    seen = {}

    def fake_run_command(cmd, folder, log, name="command", env=None):
        seen["env"] = env
        (folder / "model").mkdir()
        for name in ("config.json", "preprocessor_config.json"):
            (folder / "model" / name).write_text("{}")

    monkeypatch.setattr(training_steps, "_run_command", fake_run_command)
    cfg = with_stage_threads({**load_preset("smoke"), "stage_workers": 2})
    stage = training_steps.stage_pretrain(cfg, "mae_x", tmp_path / "data", "on", tmp_path / "stats.json", _quiet)
    run_stage(tmp_path, stage, log=_quiet)
    assert seen["env"] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_the_run_clock_records_every_step_and_what_was_skipped(tmp_path):
    def busy(folder):
        end = time.process_time() + 0.2
        while time.process_time() < end:  # 0.2 CPU s, whatever the load
            pass
        (folder / "out.txt").write_text("x")
        return {}

    clock = RunClock(tmp_path, workers=2)
    with clock.step(["busy"]):
        run_stage(tmp_path, Stage("busy", {}, busy, ["out.txt"]), log=_quiet)
    with clock.step(["busy"]):  # up to date now
        run_stage(tmp_path, Stage("busy", {}, busy, ["out.txt"]), log=_quiet)
    record = json.loads((tmp_path / TIMINGS).read_text())
    first, second = record["steps"]
    assert first["stages"] == ["busy"] and first["skipped"] == [] and first["cpu_seconds"] >= 0.2
    assert second["skipped"] == ["busy"] and second["cpu_seconds"] < 0.2
    assert record["stage_workers"] == 2 and len(record["load_average_start"]) == 3
    assert record["cpu_seconds"] >= first["cpu_seconds"] + second["cpu_seconds"] - 0.01


def test_each_stage_records_the_cpu_of_its_own_commands_side_by_side(tmp_path):
    """Two stages whose commands burn 0.3 and 0.9 CPU s run side by side: each stage.json (and the
    run's timings) carries its own command's CPU seconds, not the other's."""
    import sys

    from genssl_hf.pipeline.launch import _run_command

    def burner(cpu_seconds: float):
        code = f"import time\nend = time.process_time() + {cpu_seconds}\nwhile time.process_time() < end: pass\n"

        def run(folder):
            _run_command([sys.executable, "-c", code], folder, _quiet)
            (folder / "out.txt").write_text("x")
            return {}

        return run

    jobs = [
        (Stage("light", {}, burner(0.3), ["out.txt"]), []),
        (Stage("heavy", {}, burner(0.9), ["out.txt"]), []),
    ]
    clock = RunClock(tmp_path, workers=2)
    with clock.step(["light", "heavy"]):
        run_stage_graph(tmp_path, jobs, workers=2, log=_quiet)
    light = json.loads((tmp_path / "light" / "stage.json").read_text())["command_cpu_seconds"]
    heavy = json.loads((tmp_path / "heavy" / "stage.json").read_text())["command_cpu_seconds"]
    assert 0.3 <= light < 0.9 <= heavy < 1.5  # each its own command (plus an interpreter start-up)
    per_stage = json.loads((tmp_path / TIMINGS).read_text())["steps"][0]["per_stage"]
    assert per_stage["light"]["command_cpu_seconds"] == light and per_stage["heavy"]["command_cpu_seconds"] == heavy


@pytest.mark.slow
def test_smoke_stages_side_by_side_equal_one_by_one(tmp_path):
    """The smoke run with stage_workers 2 (its MAE beside the random-init fine-tuning) gives the same
    weights and test table as the stages run one by one at the same thread count (one)."""
    from genssl_hf.pipeline import run_pipeline

    par, seq = tmp_path / "side_by_side", tmp_path / "one_by_one"
    run_pipeline(load_preset("smoke", ["stage_workers=2"]), par, log=_quiet)
    run_pipeline(load_preset("smoke", ["stage_threads=1"]), seq, log=_quiet)
    for weights in ("mae_genssl/model", "finetune_random_init/run/best", "finetune_genssl/run/best"):
        assert (par / weights / "model.safetensors").read_bytes() == (seq / weights / "model.safetensors").read_bytes()
    rows = [json.loads((r / "evaluation/results/comparison.json").read_text())["rows"] for r in (par, seq)]
    assert rows[0] == rows[1] and {r["variant"] for r in rows[0]} == {"random_init", "genssl"}
    timings = json.loads((par / TIMINGS).read_text())
    graph = timings["steps"][-1]
    assert graph["stages"] == ["mae_genssl", "finetune_random_init", "finetune_genssl", "evaluation", "hub"]
    assert all(graph["per_stage"][n]["command_cpu_seconds"] > 0 for n in ("mae_genssl", "finetune_genssl"))
