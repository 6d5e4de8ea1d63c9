"""The pretext-on-Kermany benchmark's command line: bad choices stop before any stage runs."""

import pytest

from benchmarks import bench_pretext_kermany as bench


@pytest.mark.parametrize(
    "argv",
    [
        ["--methods", "mae,not_a_method"],
        ["--max_steps", "0"],
        ["--finetune_min_steps", "0"],
        ["--fractions", "1.5"],
        ["--seeds", "0"],
    ],
)
def test_bad_choices_stop_before_any_stage(tmp_path, argv):
    (tmp_path / "kermany-pneumonia-224").mkdir()
    with pytest.raises(SystemExit) as err:
        bench.main(["--shared", str(tmp_path), "--output_dir", str(tmp_path / "run"), *argv])
    assert err.value.code == 2
    assert not (tmp_path / "run").exists()


def test_missing_data_measures_nothing(tmp_path, capsys):
    assert bench.main(["--shared", str(tmp_path), "--output_dir", str(tmp_path / "run")]) == 2
    assert "real data not found" in capsys.readouterr().err


def test_every_method_arm_reads_its_own_pretraining_stage():
    arms = bench.arms(["mae", "jigsaw", "context_restoration", "multitask"], (0, 1, 2))
    assert [a.name for a in arms] == ["random_init", "mae", "jigsaw", "context_restoration", "multitask"]
    assert [a.init for a in arms[1:]] == [
        "mae_real/model",
        "ssl_jigsaw/model",
        "ssl_context_restoration/model",
        "ssl_multitask/model",
    ]
    assert all(a.seeds == (0, 1, 2) for a in arms)
    assert [a.name for a in bench.arms(["mae"], (0,), random_init=False)] == ["mae"]
