"""The engine task of VLP pre-training (:class:`VLPTask`): augmented crops, dual-encoder embeddings, InfoNCE."""

from __future__ import annotations

from typing import Any

import torch
from transformers import VisionTextDualEncoderModel

from genssl_hf.processing.augment import MAEAugment
from genssl_hf.training.dual_encoder import dual_encoder_embeddings
from genssl_hf.training.vlp_loss import MAX_LOGIT_SCALE, image_text_infonce

__all__ = ["VLPTask"]


class VLPTask:
    """Engine task: uint8 images -> AdaIN-aligned crops (outside autocast, after the step's seed) ->
    normalised image and report embeddings (under autocast) -> bidirectional InfoNCE, computed outside
    autocast on the embeddings as they come. A learnable temperature is clamped after every optimiser
    step (CLIP's bound); a fully frozen text tower stays in eval mode (no dropout, like its cache)."""

    def __init__(
        self,
        augment: MAEAugment,
        device,
        loss_cfg: dict[str, Any],
        text_features,
        text_frozen: bool,
        unwrapped: VisionTextDualEncoderModel,
    ):
        self.augment, self.device, self.loss_cfg = augment, device, loss_cfg
        self.text_features, self.text_frozen = text_features, text_frozen
        self.unwrapped = unwrapped  # the model inside accelerate's wrapper: its temperature and text tower

    def prepare_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**batch, "pixels": self.augment(batch["images"].to(self.device))}

    def training_step(self, model, batch: dict[str, torch.Tensor]):
        text_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        image_embeds, text_embeds = dual_encoder_embeddings(
            model, batch["pixels"], text_inputs, self.text_features, batch["groups"]
        )
        logit_scale = self.unwrapped.logit_scale
        with torch.autocast(device_type=image_embeds.device.type, enabled=False):
            loss = image_text_infonce(
                image_embeds,
                text_embeds,
                logit_scale,
                image_to_text_weight=self.loss_cfg["image_to_text_weight"],
                groups=batch["groups"] if self.loss_cfg["dedupe_targets"] else None,
            )
        return loss, {"temperature": (1.0 / logit_scale.detach().exp()).float()}

    def after_optimizer_step(self, model, state, total_steps: int) -> None:
        if self.loss_cfg["learnable_temperature"]:
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)

    def train_mode(self, model) -> None:
        model.train()
        if self.text_frozen:
            text = self.unwrapped.text_model
            text.embeddings.eval()
            text.encoder.eval()
