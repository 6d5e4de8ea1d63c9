"""MGCA on the VLP dual encoder: the stock ``VisionTextDualEncoderModel`` (its pooled, projected
embeddings carry ITA and CPA, zero-shot classification and retrieval, exactly as for ConVIRT) plus
:class:`MgcaHeads`: two local projections of the towers' patch and word tokens into one space (CTA)
and K learnable prototypes (CPA). Losses: :mod:`genssl_hf.training.mgca_loss`.

Token importance is the last layer's [CLS] attention (the paper's choice). The towers run SDPA, which
returns no attention maps, so :func:`cls_attention` recomputes the [CLS] row from the last layer's
input and its own query / key projections (equal to transformers' eager ``attentions[-1][:, :, 0]``;
tested) for the package's ViT image towers and BERT-style text towers; a ConvNeXt image tower or an
unknown text tower gets uniform weights (recorded in the run config), as does ``token_weights uniform``.

The heads are trained with the model but saved beside it (``mgca_heads.safetensors``), so the folder
still loads exactly with ``VisionTextDualEncoderModel.from_pretrained``. With a fully frozen text
tower the token features and [CLS] attention of every distinct report are computed once
(:class:`MgcaTokenFeatures`). One process only, as GLoRIA: Sinkhorn and the token loss are per batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from genssl_hf.training.gloria import FrozenTokenFeatures, image_regions, save_local_heads, word_mask
from genssl_hf.training.mgca_loss import MGCA_LOSS, mgca_loss, token_importance
from genssl_hf.training.vlp_task import VLPTask

__all__ = [
    "MGCA_HEADS_FILE",
    "MgcaHeads",
    "attach_mgca_heads",
    "save_mgca_heads",
    "load_mgca_heads",
    "cls_attention",
    "has_cls_attention",
    "token_weight_sources",
    "MgcaTokenFeatures",
    "MgcaTask",
    "mgca_task",
    "mgca_settings",
]

MGCA_HEADS_FILE = "mgca_heads.safetensors"
MGCA_ATTR = "mgca_heads"


class MgcaHeads(nn.Module):
    """Linear maps of patch tokens (image tower width) and word tokens (text tower width) to ``dim``,
    and ``num_prototypes`` prototypes of width ``dim`` (``prototypes.weight``, rows normalised in use)."""

    def __init__(self, vision_dim: int, text_dim: int, dim: int, num_prototypes: int):
        super().__init__()
        self.image = nn.Linear(vision_dim, dim)
        self.text = nn.Linear(text_dim, dim)
        self.prototypes = nn.Linear(dim, num_prototypes, bias=False)


def attach_mgca_heads(model, num_processes: int = 1, loss_cfg: dict[str, Any] | None = None) -> MgcaHeads:
    """Add :class:`MgcaHeads` to a dual encoder as ``model.mgca_heads`` (so the optimiser and
    checkpoints see them), sized from its projections; checks the run's settings first."""
    if num_processes != 1:
        raise ValueError(f"--method mgca runs in one process, got {num_processes} (Sinkhorn and CTA are per batch)")
    cfg = {**MGCA_LOSS, **(loss_cfg or {})}
    if float(cfg.get("image_to_text_weight", 0.5)) != 0.5:
        raise ValueError("--image_to_text_weight does not apply to --method mgca (ITA sums both directions)")
    heads = MgcaHeads(
        model.visual_projection.in_features,
        model.text_projection.in_features,
        model.visual_projection.out_features,
        int(cfg["num_prototypes"]),
    )
    setattr(model, MGCA_ATTR, heads)
    return heads


def save_mgca_heads(model, out: Path) -> Path | None:
    """Detach ``model.mgca_heads`` and save them to ``out / MGCA_HEADS_FILE``; None when absent."""
    return save_local_heads(model, out, MGCA_ATTR, MGCA_HEADS_FILE)


def load_mgca_heads(folder: str | Path) -> MgcaHeads:
    from safetensors.torch import load_file

    state = load_file(str(Path(folder) / MGCA_HEADS_FILE))
    dim, vision_dim = state["image.weight"].shape
    heads = MgcaHeads(vision_dim, state["text.weight"].shape[1], dim, state["prototypes.weight"].shape[0])
    heads.load_state_dict(state)
    return heads


def _last_attention(tower: nn.Module):
    """(layer input -> attention input, query proj, key proj, heads) of a ViT / BERT tower's last
    layer, or None for any other tower."""
    config = getattr(tower, "config", None)
    layers = getattr(tower, "layers", None)
    if layers is not None and hasattr(layers[-1], "layernorm_before") and hasattr(layers[-1].attention, "q_proj"):
        last = layers[-1]  # transformers 5 ViT: pre-norm
        return last.layernorm_before, last.attention.q_proj, last.attention.k_proj, config.num_attention_heads
    encoder = getattr(tower, "encoder", None)
    if encoder is not None and hasattr(encoder, "layer") and hasattr(encoder.layer[-1].attention, "self"):
        attn = encoder.layer[-1].attention.self  # BERT-style: post-norm, absolute positions only
        if getattr(config, "position_embedding_type", "absolute") != "absolute" or not hasattr(attn, "query"):
            return None
        return nn.Identity(), attn.query, attn.key, config.num_attention_heads
    return None


def has_cls_attention(tower: nn.Module) -> bool:
    return _last_attention(tower) is not None


@torch.no_grad()
def cls_attention(
    tower: nn.Module, hidden_states: tuple[torch.Tensor, ...], attention_mask: torch.Tensor | None = None
) -> torch.Tensor | None:
    """The last layer's attention of token 0 ([CLS]) over every token (B, N), mean over heads, from
    the tower's ``hidden_states`` (``output_hidden_states=True``: the last layer's input is [-2]);
    padding (``attention_mask`` 0) gets 0. None for a tower that is neither ViT nor BERT-style."""
    parts = _last_attention(tower)
    if parts is None or hidden_states is None:
        return None
    norm, query, key, heads = parts
    h = norm(hidden_states[-2])
    b, n, width = h.shape
    d = width // heads
    q = query(h[:, :1]).view(b, 1, heads, d).transpose(1, 2)  # (B, H, 1, d)
    k = key(h).view(b, n, heads, d).transpose(1, 2)  # (B, H, N, d)
    scores = (q @ k.transpose(-1, -2)).squeeze(2).float() * d**-0.5  # (B, H, N)
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask.bool()[:, None, :], float("-inf"))
    return scores.softmax(dim=-1).mean(dim=1)


class MgcaTokenFeatures(FrozenTokenFeatures):
    """:class:`FrozenTokenFeatures` whose rows also carry the [CLS] attention of each token (a last
    column): ``__call__`` gives ``(hidden (B, L, H + 1), attention_mask (B, L))``."""

    def _rows(self, text_model: nn.Module, tok) -> list[torch.Tensor]:
        out = text_model(**tok, output_hidden_states=True)
        hidden = out.last_hidden_state.float()
        attn = cls_attention(text_model, out.hidden_states, tok["attention_mask"])
        attn = hidden.new_zeros(hidden.shape[:2]) if attn is None else attn.float()
        rows = torch.cat([hidden, attn[..., None]], dim=-1)
        return [r[: int(n)].clone() for r, n in zip(rows, tok["attention_mask"].sum(dim=1).tolist())]


class MgcaTask(VLPTask):
    """The VLP engine task with MGCA's loss: one pass of each tower gives the pooled embeddings (ITA,
    CPA) and the patch / word tokens with their [CLS] attention (CTA, through the local heads). CPA
    joins the total from optimiser step ``cpa_start`` on (it is logged before)."""

    def __init__(self, augment, device, loss_cfg: dict[str, Any], tokens, text_frozen, unwrapped, state, cpa_start):
        super().__init__(augment, device, loss_cfg, None, text_frozen, unwrapped)
        self.tokens, self.state, self.cpa_start = tokens, state, int(cpa_start)
        attention = loss_cfg["token_weights"] == "attention"
        self.image_attention = attention and has_cls_attention(unwrapped.vision_model)
        self.text_attention = attention and has_cls_attention(unwrapped.text_model)

    def _text(self, model, batch):
        """(hidden (B, L, H), attention mask (B, L), [CLS] attention (B, L) or None)."""
        if self.tokens is not None:
            rows, mask = self.tokens(batch["groups"])
            rows, mask = rows.to(batch["pixels"].device), mask.to(batch["pixels"].device)
            return rows[..., :-1], mask, (rows[..., -1] if self.text_attention else None)
        text_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        out = model.text_model(**text_inputs, output_hidden_states=self.text_attention)
        mask = batch["attention_mask"]
        attn = cls_attention(model.text_model, out.hidden_states, mask) if self.text_attention else None
        return out.last_hidden_state, mask, attn

    def training_step(self, model, batch: dict[str, torch.Tensor]):
        heads = getattr(model, MGCA_ATTR)
        vision = model.vision_model(pixel_values=batch["pixels"], output_hidden_states=self.image_attention)
        hidden, attention, text_cls = self._text(model, batch)
        image_embeds = model.visual_projection(vision.pooler_output)
        text_embeds = model.text_projection(model.text_model.pooler(hidden))
        patches = image_regions(vision.last_hidden_state)
        patch_cls = cls_attention(model.vision_model, vision.hidden_states)[:, 1:] if self.image_attention else None
        words = word_mask(attention)
        tokens = {
            "words": heads.text(hidden),
            "word_mask": words,
            "patches": heads.image(patches),
            "word_weights": token_importance(text_cls, words),
            "patch_weights": token_importance(
                patch_cls, torch.ones(patches.shape[:2], dtype=torch.bool, device=patches.device)
            ),
        }
        use_cpa = self.state.global_step >= self.cpa_start
        with torch.autocast(device_type=image_embeds.device.type, enabled=False):
            loss, parts = mgca_loss(
                image_embeds,
                text_embeds,
                self.unwrapped.logit_scale,
                tokens,
                heads.prototypes.weight,
                self.loss_cfg,
                groups=batch["groups"] if self.loss_cfg["dedupe_targets"] else None,
                use_cpa=use_cpa,
            )
        temperature = (1.0 / self.unwrapped.logit_scale.detach().exp()).float()
        return loss, {**parts, "cpa_on": torch.tensor(float(use_cpa)), "temperature": temperature}


def token_weight_sources(unwrapped, loss_cfg: dict[str, Any]) -> dict[str, str]:
    """Where each tower's token importance comes from: ``cls-attention`` or ``uniform``."""
    attention = loss_cfg.get("token_weights", "attention") == "attention"
    return {
        side: "cls-attention" if attention and has_cls_attention(tower) else "uniform"
        for side, tower in (("image", unwrapped.vision_model), ("text", unwrapped.text_model))
    }


def mgca_task(augment, device, run: dict[str, Any], unwrapped) -> MgcaTask:
    """The task of a prepared VLP run: token features and [CLS] attention cached when the text tower is
    fully frozen; CPA from the run's ``cpa_start_step`` (resolved by then: unset is one epoch)."""
    cfg = run["loss_cfg"]
    tokens = None
    if run["fully_frozen"]:
        tokens = MgcaTokenFeatures(unwrapped.text_model, run["tokenizer"], run["data"].texts, run["max_length"])
    return MgcaTask(augment, device, cfg, tokens, run["fully_frozen"], unwrapped, run["state"], cfg["cpa_start_step"])


def mgca_settings(args, loss_name: str) -> dict[str, Any]:
    """MGCA_LOSS updated by the ``--mgca_*`` options that are set, checked (errors name the option);
    {} for another method, where setting any of them is an error."""
    given = {k: v for k, v in vars(args).items() if k.startswith("mgca_") and v is not None}
    if loss_name != "mgca":
        if given:
            raise ValueError(f"--{sorted(given)[0]} applies to --method mgca only (this run: {loss_name})")
        return {}
    s = {**MGCA_LOSS, **{k[len("mgca_") :]: v for k, v in given.items()}}
    for key in ("ita_weight", "cta_weight", "cpa_weight"):
        if not float(s[key]) >= 0.0:
            raise ValueError(f"--mgca_{key} must be >= 0, got {s[key]}")
    if float(s["ita_weight"]) + float(s["cta_weight"]) + float(s["cpa_weight"]) <= 0.0:
        raise ValueError("--mgca_ita_weight, --mgca_cta_weight and --mgca_cpa_weight are all 0: nothing to train")
    for key in ("local_temperature", "prototype_temperature", "sinkhorn_epsilon"):
        if not float(s[key]) > 0.0:
            raise ValueError(f"--mgca_{key} must be > 0, got {s[key]}")
    if int(s["num_prototypes"]) < 2:
        raise ValueError(f"--mgca_num_prototypes must be >= 2, got {s['num_prototypes']}")
    if int(s["sinkhorn_iterations"]) < 1:
        raise ValueError(f"--mgca_sinkhorn_iterations must be >= 1, got {s['sinkhorn_iterations']}")
    if s["cpa_start_step"] is not None and int(s["cpa_start_step"]) < 0:
        raise ValueError(f"--mgca_cpa_start_step must be >= 0, got {s['cpa_start_step']}")
    if s["token_weights"] not in ("attention", "uniform"):
        raise ValueError(f"--mgca_token_weights must be attention or uniform, got {s['token_weights']!r}")
    return s
