"""The shared training engine on a tiny regression: it learns (loss below predict-the-mean), a task
without metrics runs, the optional hooks (inputs outside autocast, a second optimiser, train mode,
periodic evaluation), exact resume with two optimisers, the final checkpoint and the time box."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from genssl_hf.training.checkpoints import find_last_checkpoint
from genssl_hf.training.common import EpochShuffleSampler, make_accelerator
from genssl_hf.training.engine import Engine, EngineConfig, _MetricMeter

torch.set_num_threads(1)

D = 8
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    w = torch.arange(1, D + 1, dtype=torch.float32) / D
    return x, x @ w + 0.05 * torch.randn(n, generator=g)


def _loader(x, y, batch: int = 8, seed: int = 0):
    rows = list(zip(x, y))
    return torch.utils.data.DataLoader(
        rows,
        batch_size=batch,
        sampler=EpochShuffleSampler(len(rows), seed=seed),
        drop_last=True,
        collate_fn=lambda r: (torch.stack([a for a, _ in r]), torch.stack([b for _, b in r])),
    )


class Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(D, D)
        self.frozen = torch.nn.Dropout(0.5)  # a part a task keeps in eval mode
        self.head = torch.nn.Linear(D, 1)

    def forward(self, x):
        return self.head(self.frozen(self.body(x))).squeeze(-1)


class PlainTask:
    """Only ``training_step``, no metrics (the meter must cope)."""

    def training_step(self, model, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(model(x).float(), y), {}


class HookedTask:
    """Every optional hook: noisy inputs made after the step's seed and outside autocast, a critic
    trained by a second optimiser, a frozen part kept in eval mode, a periodic evaluation."""

    def __init__(self, accelerator, critic, opt_c):
        self.accelerator, self.critic, self.opt_c = accelerator, critic, opt_c
        self.input_dtypes: list[torch.dtype] = []
        self.frozen_modes: list[bool] = []
        self._x = None

    def prepare_batch(self, batch):
        x, y = batch
        noisy = x @ torch.eye(D) + 0.01 * torch.randn_like(x)  # a matmul: bf16 if it ran under autocast
        self.input_dtypes.append(noisy.dtype)
        return noisy, y

    def training_step(self, model, batch):
        x, y = batch
        self.frozen_modes.append(model.frozen.training)
        self._x = x
        pred = model(x).float()
        return torch.nn.functional.mse_loss(pred, y), {"pred_std": pred.detach().std()}

    def auxiliary_step(self, model):
        self.opt_c.zero_grad(set_to_none=True)
        loss = self.critic(self._x).float().pow(2).mean()
        self.accelerator.backward(loss)
        self.opt_c.step()
        self.opt_c.zero_grad(set_to_none=True)
        return {"critic": loss.detach()}

    def train_mode(self, model):
        model.train()
        model.frozen.eval()

    def periodic(self, model, state):
        model.eval()
        return {"eval/step_seen": float(state.global_step)}


def _run_hooked(out, *, total=6, stop_after=None, resume=None, mixed_precision="no", every=3, max_minutes=None):
    acc = make_accelerator(None, cpu=True, mixed_precision=mixed_precision, gradient_accumulation_steps=2)
    torch.manual_seed(0)
    model, critic = Regression(), torch.nn.Linear(D, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    opt_c = torch.optim.SGD(critic.parameters(), lr=1e-2)
    engine = Engine(
        acc,
        EngineConfig(
            output_dir=out,
            total_steps=total,
            images_per_micro_batch=8,
            seed=3,
            max_grad_norm=1.0,
            logging_steps=2,
            checkpointing_steps=every,
            eval_steps=2,
            stop_after_steps=stop_after,
            checkpoint_at_end=True,
            max_minutes=max_minutes,
        ),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / (total + 1))
    model, opt = engine.prepare(model, opt, sched)
    critic, opt_c = acc.prepare(critic, opt_c)
    loader = acc.prepare(_loader(*_data()))
    state = engine.resume(resume)
    task = HookedTask(acc, critic, opt_c)
    result = engine.run(task, model, opt, sched, loader, state, extra_models=(critic,))
    return result, task


def test_metric_meter_without_metrics_returns_nothing():
    acc = make_accelerator(None, cpu=True)
    meter = _MetricMeter(acc)
    meter.add({})
    meter.add({})
    assert meter.mean() == {}  # was torch.stack([]) -> RuntimeError
    meter.add({"a": torch.tensor(1.0)})
    meter.add({"a": torch.tensor(3.0)})
    assert meter.mean() == {"a": 2.0} and meter.n == 0


def test_engine_learns_a_regression_with_a_task_without_metrics(tmp_path):
    x, y = _data(256)
    acc = make_accelerator(None, cpu=True, mixed_precision="no")
    torch.manual_seed(0)
    model = Regression()
    model.frozen.p = 0.0
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    engine = Engine(
        acc, EngineConfig(output_dir=tmp_path, total_steps=150, images_per_micro_batch=16, logging_steps=50)
    )
    model, opt = engine.prepare(model, opt)
    result = engine.run(PlainTask(), model, opt, None, acc.prepare(_loader(x, y, batch=16)), engine.resume(None))
    baseline = float(((y - y.mean()) ** 2).mean())  # predict-the-mean
    assert result.state.global_step == 150 and not result.interrupted
    assert result.summary["final_loss"] < 0.1 * baseline, (result.summary["final_loss"], baseline)
    assert [h["step"] for h in result.history] == [50, 100, 150]
    assert find_last_checkpoint(tmp_path) is None  # checkpointing_steps 0, no checkpoint_at_end


def test_hooks_and_exact_resume_with_two_optimisers(tmp_path):
    straight, task = _run_hooked(tmp_path / "straight")
    assert straight.state.global_step == 6 and not straight.interrupted
    assert set(task.input_dtypes) == {torch.float32}
    assert not any(task.frozen_modes)  # the task's train mode held after every periodic evaluation
    logged = {k for h in straight.history for k in h}
    assert {"train/loss", "train/pred_std", "train/critic", "train/lr", "eval/step_seen"} <= logged
    assert find_last_checkpoint(tmp_path / "straight").name == "checkpoint-6"  # checkpoint_at_end

    first, _ = _run_hooked(tmp_path / "resumed", stop_after=3)
    assert first.interrupted and find_last_checkpoint(tmp_path / "resumed").name == "checkpoint-3"
    second, _ = _run_hooked(tmp_path / "resumed", resume="latest")
    assert second.state.global_step == 6 and second.state.micro_step == straight.state.micro_step
    for name in ("model.safetensors", "model_1.safetensors"):  # the regression and the critic
        a = load_file(str(tmp_path / "straight" / "checkpoint-6" / name))
        b = load_file(str(tmp_path / "resumed" / "checkpoint-6" / name))
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=f"{name}:{k}")


def test_inputs_stay_float32_under_bf16_autocast(tmp_path):
    _, task = _run_hooked(tmp_path / "bf16", total=2, mixed_precision="bf16", every=0)
    assert set(task.input_dtypes) == {torch.float32}


def test_time_box_ends_the_run_with_a_checkpoint(tmp_path):
    result, _ = _run_hooked(tmp_path / "boxed", total=50, max_minutes=1e-9, every=0)
    assert result.time_limited and not result.interrupted and result.state.global_step == 1
    assert find_last_checkpoint(tmp_path / "boxed").name == "checkpoint-1"
    with pytest.raises(ValueError, match="max_minutes"):
        EngineConfig(output_dir=tmp_path, total_steps=1, images_per_micro_batch=1, max_minutes=0)
