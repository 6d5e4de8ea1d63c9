"""Fine-tuning / linear probing as an engine task: batch -> loss, validation with best-model
selection, and the saved model folders (``best/``, ``final/``).

The loop itself is :class:`~genssl_hf.training.engine.Engine`'s; :mod:`genssl_hf.training.finetune`
builds the data, the model and this task, and evaluates the selected model on the test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from genssl_hf.training.finetune_data import InputNormalizer
from genssl_hf.training.thresholds import choose_thresholds, save_thresholds, threshold_vector
from genssl_hf.utils import atomic_dir, write_json

__all__ = ["FinetuneTask", "predict_dataset", "save_model_folder", "best_thresholds", "MODEL_CARD_TEMPLATE"]

MODEL_CARD_TEMPLATE = "classifier"


# ------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def predict_dataset(model, loader, normalizer: InputNormalizer, accelerator=None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets over a loader of :class:`Collator` batches (gathered across processes)."""
    was_training = model.training
    model.eval()
    base = accelerator.unwrap_model(model) if accelerator is not None else model
    probs, targets = [], []
    for batch in loader:
        x = normalizer(normalizer.resize(batch["pixels"].float().div(255.0)))
        device = accelerator.device if accelerator is not None else next(base.parameters()).device
        logits = model(pixel_values=x.to(device)).logits.float()
        p = (
            torch.sigmoid(logits)
            if base.config.problem_type == "multi_label_classification"
            else torch.softmax(logits, -1)
        )
        y = batch["labels"].to(device)
        if accelerator is not None:
            p, y = accelerator.gather_for_metrics((p, y))
        probs.append(p.cpu())
        targets.append(y.cpu())
    model.train(was_training)
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


def selection_value(metrics: dict[str, Any], name: str) -> float:
    """The validation metric the best model is chosen by, as "higher is better"."""
    value = metrics.get(name)
    if value is None:
        raise ValueError(
            f"selection metric {name!r} is undefined on the validation split "
            f"(undefined AUCs: {metrics.get('undefined_auc')})"
        )
    return -float(value) if name == "loss" else float(value)


def validation_loss(probs: np.ndarray, y: np.ndarray, multi_label: bool) -> float:
    eps = 1e-7
    p = np.clip(probs.astype(np.float64), eps, 1 - eps)
    if multi_label:
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    return float(-np.log(p[np.arange(len(y)), y.astype(np.int64)]).mean())


def best_thresholds(best: dict[str, Any], label_names: list[str]) -> np.ndarray | float:
    """The selected model's validation-chosen thresholds (0.5 for a run resumed from a checkpoint
    written before thresholds were recorded)."""
    if not best.get("thresholds"):
        import logging

        logging.getLogger(__name__).warning(
            "the selected model has no validation thresholds (old checkpoint); test metrics use 0.5"
        )
        return 0.5
    return threshold_vector(best["thresholds"], label_names)


# -------------------------------------------------------------------------------------- saving
def save_model_folder(
    target: Path,
    model,
    processor,
    card_vars: dict[str, Any],
    metrics: dict[str, Any],
    thresholds: dict[str, Any] | None = None,
) -> None:
    """``save_pretrained`` model + processor, eval results, thresholds and card, written atomically."""
    from genssl_hf.core.cards import render_model_card

    with atomic_dir(target, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_json(tmp / "eval_results.json", metrics)
        if thresholds is not None:  # the validation-chosen operating point travels with the model
            save_thresholds(tmp, thresholds)
        card_data = {
            "license": "apache-2.0",
            "library_name": "transformers",
            "pipeline_tag": "image-classification",
            "tags": ["genssl_hf", "chest-x-ray", "vit", "image-classification", "medical-imaging"],
        }
        if card_vars.get("base_model_id"):
            card_data["base_model"] = card_vars["base_model_id"]
        card = render_model_card(MODEL_CARD_TEMPLATE, card_data, metrics=metrics, **card_vars)
        card.save(str(tmp / "README.md"))


# ------------------------------------------------------------------------------------------ task
class FinetuneTask:
    """Engine task for a classifier.

    ``prepare_batch``: uint8 pixels -> augmented (kornia) and normalised crops (after the step's seed,
    outside autocast). ``training_step``: the model's own loss (BCE multi-label / CE multi-class).
    ``train_mode``: a linear probe keeps its frozen encoder in eval mode (no dropout; BN keeps its
    pre-trained statistics). ``periodic``: predict the validation split, keep the best model (by
    ``selection_metric``) in ``<output_dir>/best`` with thresholds chosen on those predictions; the
    validation history and the best record live in ``state.extra`` (so they survive a resume).
    ``choose_thresholds``: the rule applier (:func:`~genssl_hf.training.thresholds.choose_thresholds`).
    """

    def __init__(
        self,
        *,
        model,
        unwrapped,
        augment,
        normalizer: InputNormalizer,
        val_loader,
        accelerator,
        label_names: list[str],
        multi_label: bool,
        steps_per_epoch: int,
        linear_probe: bool,
        selection_metric: str,
        threshold_rule: str,
        target_sensitivity: float,
        out_dir: Path,
        processor,
        card_vars: dict[str, Any],
        choose_thresholds=choose_thresholds,
    ):
        self.model, self.unwrapped, self.augment, self.normalizer = model, unwrapped, augment, normalizer
        self.val_loader, self.accelerator = val_loader, accelerator
        self.label_names, self.multi_label, self.steps_per_epoch = label_names, multi_label, steps_per_epoch
        self.linear_probe, self.selection_metric = linear_probe, selection_metric
        self.threshold_rule, self.target_sensitivity = threshold_rule, target_sensitivity
        self.out_dir, self.processor, self.card_vars = Path(out_dir), processor, card_vars
        self.choose_thresholds = choose_thresholds  # the caller's (tests watch what it is given)
        cnn = hasattr(unwrapped, "resnet")
        self.encoder = unwrapped.resnet if cnn else unwrapped.vit

    # --- engine hooks
    def prepare_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.normalizer(self.augment(batch["pixels"].float().div(255.0)))
        return x, batch["labels"]

    def training_step(self, model, batch: tuple[torch.Tensor, torch.Tensor]):
        x, labels = batch
        return model(pixel_values=x, labels=labels).loss, {}

    def train_mode(self, model) -> None:
        model.train()
        if self.linear_probe:
            self.encoder.eval()

    def periodic(self, _unwrapped, state) -> dict[str, float]:
        """Validate (with the prepared model, as trained), select, and return the ``val/`` logs."""
        entry = self.evaluate_and_select(state)
        return {f"val/{k}": v for k, v in entry.items() if isinstance(v, (int, float))}

    # --- selection
    def evaluate_and_select(self, state) -> dict[str, Any]:
        from genssl_hf.core.classification_metrics import classification_metrics

        probs, y = predict_dataset(self.model, self.val_loader, self.normalizer, self.accelerator)
        self.train_mode(self.model)
        m = classification_metrics(y, probs, label_names=self.label_names)
        loss = validation_loss(probs, y, self.multi_label)
        entry = {
            "step": state.global_step,
            "epoch": state.global_step / self.steps_per_epoch,
            "loss": loss,
            "mean_auc": m["mean_auc"],
            "accuracy": m["accuracy"],
            "undefined_auc": m["undefined_auc"],
            "train_loss": state.last_loss,
        }
        history = state.extra.setdefault("history", [])
        history.append(entry)
        m["loss"] = loss
        value = selection_value(m, self.selection_metric)
        best = state.extra.get("best")
        if best is None or value > best["value"]:
            thresholds = self.choose_thresholds(
                y, probs, self.label_names, rule=self.threshold_rule, target_sensitivity=self.target_sensitivity
            ) | {"selected_at_step": state.global_step}
            state.extra["best"] = {
                "value": value,
                "step": state.global_step,
                "epoch": entry["epoch"],
                "metrics": m,
                "thresholds": thresholds,
            }
            if self.accelerator.is_main_process:
                save_model_folder(
                    self.out_dir / "best",
                    self.unwrapped,
                    self.processor,
                    self.card_vars | {"stage": "best"},
                    {"validation": m, "selected_at_step": state.global_step},
                    thresholds,
                )
        self.accelerator.wait_for_everyone()
        return entry
