"""The one training recipe (training/recipe.py): its schedule arithmetic, and a toy method plugged into
``train`` that learns (a linear regression's loss falls below the trivial predictor's) and gets the
recipe's outputs (run config with the environment, export on the main process, resume-safe checks)."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest
import torch

from genssl_hf.training.args import add_common_args, add_optimisation_args
from genssl_hf.training.common import EpochShuffleSampler
from genssl_hf.training.recipe import Method, plan_schedule, train
from genssl_hf.utils import write_json

torch.set_num_threads(1)


def _accelerator(accum: int = 1, processes: int = 1):
    return SimpleNamespace(gradient_accumulation_steps=accum, num_processes=processes)


def _args(**kw) -> argparse.Namespace:
    base = dict(per_device_train_batch_size=8, max_steps=None, num_train_epochs=2.0, learning_rate=None)
    return argparse.Namespace(**{**base, **kw})


def test_schedule_lr_rule_and_warmup_sources():
    # base lr x total batch / 256 with accumulation and processes in the total batch
    s = plan_schedule(_args(base_learning_rate=1e-3, warmup_ratio=0.25), 10, _accelerator(accum=2, processes=2))
    assert s["total_batch_size"] == 32 and s["learning_rate"] == pytest.approx(1e-3 * 32 / 256)
    assert s["total_steps"] == 10 and s["warmup_steps"] == round(0.25 * 10)  # 2 epochs x ceil(10 / 2)
    # an absolute lr wins; warm-up in steps beats the ratio; warm-up in epochs scales with the run
    s = plan_schedule(_args(learning_rate=0.5, base_learning_rate=1e-3, warmup_steps=3), 10, _accelerator())
    assert s["learning_rate"] == 0.5 and s["warmup_steps"] == 3
    s = plan_schedule(_args(learning_rate=0.1, warmup_epochs=1, max_steps=40), 10, _accelerator())
    assert s["epochs"] == 4 and s["warmup_steps"] == 10
    with pytest.raises(ValueError, match="--learning_rate"):
        plan_schedule(_args(), 10, _accelerator())
    with pytest.raises(ValueError, match="--max_steps"):  # streaming: unknown epoch length
        plan_schedule(_args(learning_rate=0.1), None, _accelerator())


class _RegressionTask:
    def training_step(self, model, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(model(x), y), {}


class LinearRegression(Method):
    """A toy method: y = x . w + noise, a linear model, squared error."""

    name = "toy_regression"
    uses_reference_stats = False

    def check(self, args):
        if args.per_device_train_batch_size < 1:
            raise ValueError("--per_device_train_batch_size must be >= 1")
        return {"checked": True}

    def load_data(self, args, data, run):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(256, 4, generator=g)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.01 * torch.randn(256, 1, generator=g)
        return torch.utils.data.TensorDataset(x, y)

    def build_model(self, args, run, accelerator):
        return torch.nn.Linear(4, 1)

    def build_loader(self, args, run, accelerator):
        loader = torch.utils.data.DataLoader(
            run["data"],
            batch_size=args.per_device_train_batch_size,
            sampler=EpochShuffleSampler(len(run["data"]), seed=args.seed),
            drop_last=True,
        )
        loader = accelerator.prepare(loader)
        return loader, len(loader)

    def build_optimizer(self, args, run, lr):
        return torch.optim.SGD(run["model"].parameters(), lr=lr)

    def run_config(self, args, run):
        return {"checked": run["checked"], "derived": run["schedule"]}

    def build_task(self, args, run, accelerator):
        return _RegressionTask()

    def export(self, args, run, run_config, summary, result):
        x, y = run["data"].tensors
        with torch.no_grad():
            summary["final_mse"] = float(torch.nn.functional.mse_loss(run["unwrapped"](x), y))
        summary["trivial_mse"] = float(((y - y.mean()) ** 2).mean())  # the best constant predictor
        write_json(run["output_dir"] / "train_summary.json", summary)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_common_args(p)
    add_optimisation_args(p, batch_size=16, epochs=3, base_learning_rate=True, warmup_ratio=0.0)
    return p


def test_a_toy_method_learns_on_the_recipe(tmp_path):
    args = _parser().parse_args(
        ["--output_dir", str(tmp_path / "run"), "--base_learning_rate", "6.4", "--logging_steps", "5"]
    )
    summary = train(LinearRegression(), args)
    out = tmp_path / "run"
    config = json.loads((out / "run_config.json").read_text())
    assert config["checked"] is True and "environment" in config
    assert config["derived"]["learning_rate"] == pytest.approx(6.4 * 16 / 256)  # the base lr rule
    assert config["derived"]["total_steps"] == 3 * 256 // 16
    assert summary["final_mse"] < 0.05 * summary["trivial_mse"], summary
    assert json.loads((out / "train_summary.json").read_text())["final_mse"] == summary["final_mse"]


def test_recipe_checks_come_before_any_work(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "model.safetensors").write_bytes(b"")
    args = _parser().parse_args(["--output_dir", str(tmp_path / "taken"), "--learning_rate", "0.1"])
    with pytest.raises(FileExistsError, match="--output_dir"):
        train(LinearRegression(), args)
    args = _parser().parse_args(["--output_dir", str(tmp_path / "new"), "--learning_rate", "0.1", "--push_to_hub"])
    with pytest.raises(ValueError, match="--hub_model_id"):
        train(LinearRegression(), args)
    assert not (tmp_path / "new").exists()
