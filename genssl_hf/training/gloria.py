"""GLoRIA-style pre-training (``genssl pretrain --method gloria``) on the VLP recipe of
:mod:`genssl_hf.training.vlp`: the stock ``VisionTextDualEncoderModel`` (its pooled, projected
embeddings carry the global loss, zero-shot classification and retrieval, exactly as for ConVIRT)
plus two local projection heads (:class:`GloriaLocalHeads`) that map the image tower's region
features (ViT patch tokens, ConvNeXt last-stage cells) and the text tower's token features into one
space for word-to-region attention (losses in :mod:`genssl_hf.training.gloria_loss`).

The local heads are trained with the model but saved beside it (``gloria_local_heads.safetensors``),
so the model folder still loads exactly with ``VisionTextDualEncoderModel.from_pretrained``. With a
fully frozen text tower the token features of every distinct report are computed once
(:class:`FrozenTokenFeatures`), as the ConVIRT recipe caches its CLS features. One process only:
the attention reads the towers' token outputs directly, outside a DDP wrapper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from genssl_hf.training.gloria_loss import GLORIA_LOSS, gloria_loss
from genssl_hf.training.vlp_loss import text_group_ids
from genssl_hf.training.vlp_task import VLPTask

__all__ = [
    "LOCAL_HEADS_FILE",
    "GloriaLocalHeads",
    "attach_local_heads",
    "save_local_heads",
    "load_local_heads",
    "image_regions",
    "word_mask",
    "FrozenTokenFeatures",
    "GloriaTask",
    "gloria_task",
]

LOCAL_HEADS_FILE = "gloria_local_heads.safetensors"
LOCAL_ATTR = "gloria_local"


class GloriaLocalHeads(nn.Module):
    """Linear maps of region features (image tower width) and token features (text tower width) to ``dim``."""

    def __init__(self, vision_dim: int, text_dim: int, dim: int):
        super().__init__()
        self.image = nn.Linear(vision_dim, dim)
        self.text = nn.Linear(text_dim, dim)


def attach_local_heads(model, num_processes: int = 1, loss_cfg: dict[str, Any] | None = None) -> GloriaLocalHeads:
    """Add :class:`GloriaLocalHeads` to a dual encoder as ``model.gloria_local`` (so the optimiser and
    checkpoints see it), sized from its projections; checks the run's settings first."""
    if num_processes != 1:
        raise ValueError(f"--method gloria runs in one process, got {num_processes} (its local loss is per batch)")
    if loss_cfg is not None and float(loss_cfg.get("image_to_text_weight", 0.5)) != 0.5:
        raise ValueError("--image_to_text_weight does not apply to --method gloria (its losses sum both directions)")
    heads = GloriaLocalHeads(
        model.visual_projection.in_features, model.text_projection.in_features, model.visual_projection.out_features
    )
    setattr(model, LOCAL_ATTR, heads)
    return heads


def save_local_heads(model, out: Path, attr: str = LOCAL_ATTR, filename: str = LOCAL_HEADS_FILE) -> Path | None:
    """Detach the side heads ``model.<attr>`` (GLoRIA's local heads by default) from ``model`` (so that
    the model folder is the stock dual encoder) and save them to ``out / filename`` via a temporary
    file; None when the model has none."""
    import os

    from safetensors.torch import save_file

    heads = getattr(model, attr, None)
    if heads is None:
        return None
    delattr(model, attr)
    path = Path(out) / filename
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in heads.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    return path


def load_local_heads(folder: str | Path) -> GloriaLocalHeads:
    from safetensors.torch import load_file

    state = load_file(str(Path(folder) / LOCAL_HEADS_FILE))
    heads = GloriaLocalHeads(
        state["image.weight"].shape[1], state["text.weight"].shape[1], state["image.weight"].shape[0]
    )
    heads.load_state_dict(state)
    return heads


def image_regions(last_hidden_state: torch.Tensor) -> torch.Tensor:
    """(B, R, C) region features: ViT patch tokens (the CLS token dropped) or ConvNeXt cells."""
    if last_hidden_state.ndim == 4:
        return last_hidden_state.flatten(2).transpose(1, 2)
    return last_hidden_state[:, 1:]


def word_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The report's word tokens: attended positions without the first ([CLS]) and the last ([SEP]);
    a report with no word keeps its [CLS] so that every report has one."""
    m = attention_mask.bool().clone()
    lengths = m.sum(dim=1)
    m[:, 0] = False
    m[torch.arange(len(m)), (lengths - 1).clamp(min=0)] = False
    empty = ~m.any(dim=1)
    m[empty, 0] = True
    return m


class FrozenTokenFeatures:
    """The last hidden states of a fully frozen text tower, once per distinct report (eval mode), looked
    up by report id: ``(hidden (B, L, H), attention_mask (B, L))`` padded to the batch's longest."""

    def __init__(self, text_model: nn.Module, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 128):
        distinct = list(dict.fromkeys(texts))
        self.row = {int(g): i for i, g in enumerate(text_group_ids(distinct))}
        was_training = text_model.training
        text_model.eval()
        device = next(text_model.parameters()).device
        self.features: list[torch.Tensor] = []
        with torch.no_grad():
            for s in range(0, len(distinct), batch_size):
                tok = tokenizer(
                    distinct[s : s + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(device)
                self.features.extend(self._rows(text_model, tok))
        text_model.train(was_training)

    def _rows(self, text_model: nn.Module, tok) -> list[torch.Tensor]:
        """Each report's cached rows (its tokens, unpadded): here the last hidden states."""
        hidden = text_model(**tok).last_hidden_state.float()
        return [h[: int(n)].clone() for h, n in zip(hidden, tok["attention_mask"].sum(dim=1).tolist())]

    def __len__(self) -> int:
        return len(self.features)

    def __call__(self, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.features[self.row[int(g)]] for g in groups]
        length = max(len(r) for r in rows)
        hidden = rows[0].new_zeros(len(rows), length, rows[0].shape[1])
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            hidden[i, : len(r)], mask[i, : len(r)] = r, 1
        return hidden, mask


class GloriaTask(VLPTask):
    """The VLP engine task with GLoRIA's loss: one pass of each tower gives the pooled embeddings
    (global loss) and the region / token features (local loss, through the local heads)."""

    def __init__(
        self, augment, device, loss_cfg: dict[str, Any], tokens: FrozenTokenFeatures | None, text_frozen, unwrapped
    ):
        super().__init__(augment, device, loss_cfg, None, text_frozen, unwrapped)
        self.tokens = tokens

    def training_step(self, model, batch: dict[str, torch.Tensor]):
        heads = getattr(model, LOCAL_ATTR)
        vision = model.vision_model(pixel_values=batch["pixels"])
        if self.tokens is not None:
            hidden, attention = self.tokens(batch["groups"])
            hidden, attention = hidden.to(vision.pooler_output.device), attention.to(hidden.device)
        else:
            text_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
            hidden, attention = model.text_model(**text_inputs).last_hidden_state, batch["attention_mask"]
        image_embeds = model.visual_projection(vision.pooler_output)
        text_embeds = model.text_projection(model.text_model.pooler(hidden))
        regions = heads.image(image_regions(vision.last_hidden_state))
        words = heads.text(hidden)
        with torch.autocast(device_type=image_embeds.device.type, enabled=False):
            loss, parts = gloria_loss(
                image_embeds,
                text_embeds,
                regions,
                words,
                word_mask(attention),
                self.loss_cfg,
                groups=batch["groups"] if self.loss_cfg["dedupe_targets"] else None,
            )
        return loss, {**parts, "temperature": (1.0 / self.unwrapped.logit_scale.detach().exp()).float()}


def gloria_task(augment, device, run: dict[str, Any], unwrapped) -> GloriaTask:
    """The task of a prepared VLP run (``run`` of :func:`genssl_hf.training.vlp.pretrain_vlp`): token
    features cached when the text tower is fully frozen and the run is single-process."""
    tokens = None
    if run["fully_frozen"]:
        tokens = FrozenTokenFeatures(unwrapped.text_model, run["tokenizer"], run["data"].texts, run["max_length"])
    # --temperature sets tau3 (the model's logit scale, used by zero-shot scoring, stays consistent)
    settings = {**GLORIA_LOSS, **run["loss_cfg"], "match_temperature": 1.0 / float(run["loss_cfg"]["temperature"])}
    return GloriaTask(augment, device, settings, tokens, run["fully_frozen"], unwrapped)
