"""MGCA: Sinkhorn-Knopp, the swapped prediction, the token-wise loss, the token importance and the
[CLS] attention against plain loop references (the paper's / SwAV's definitions written out), the
total with its weights and warm-up, gradients and tiny batches, bad options, and pre-training on
phantoms whose global embeddings retrieve reports above chance and whose folder loads exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from genssl_hf.training.mgca_loss import (
    MGCA_LOSS,
    mgca_loss,
    prototype_alignment_loss,
    sinkhorn,
    token_alignment_loss,
    token_importance,
)


# ----------------------------------------------------------------------------- plain references
def reference_sinkhorn(scores, epsilon, iterations):
    """SwAV's algorithm, element by element in float64: Q (K x B) = exp(scores^T / eps) / total; per
    round every prototype row to mass 1/K, then every sample column to 1/B; columns to 1 at the end."""
    s = np.asarray(scores, dtype=np.float64)
    b, k = s.shape
    q = np.exp(s.T / epsilon)
    q = q / q.sum()
    for _ in range(iterations):
        for row in range(k):
            q[row, :] = q[row, :] / q[row, :].sum() / k
        for col in range(b):
            q[:, col] = q[:, col] / q[:, col].sum() / b
    for col in range(b):
        q[:, col] = q[:, col] / q[:, col].sum()
    return q.T


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _log_softmax_at(values, index):
    m = max(values)
    return values[index] - m - math.log(sum(math.exp(v - m) for v in values))


def reference_one_side(tokens, others, valid, other_valid, weights, tau):
    """For one pair: each valid token attends over the other modality's valid tokens; the InfoNCE of
    token i against every counterpart (row) and of counterpart i against every token (column)."""
    tokens = [_unit(t) for t in tokens]
    others = [_unit(o) for o in others]
    idx = [i for i in range(len(tokens)) if valid[i]]
    keys = [others[j] for j in range(len(others)) if other_valid[j]]
    counterpart = {}
    for i in idx:
        scores = [_dot(tokens[i], k) / tau for k in keys]
        m = max(scores)
        e = [math.exp(x - m) for x in scores]
        a = [x / sum(e) for x in e]
        counterpart[i] = _unit([sum(a[j] * keys[j][d] for j in range(len(keys))) for d in range(len(tokens[i]))])
    total = 0.0
    for n, i in enumerate(idx):
        row = [_dot(tokens[i], counterpart[k]) / tau for k in idx]
        col = [_dot(tokens[k], counterpart[i]) / tau for k in idx]
        total += weights[i] * (-_log_softmax_at(row, n) - _log_softmax_at(col, n)) / 2
    return total


def reference_token_loss(words, patches, word_mask, word_weights, patch_weights, tau):
    b = len(words)
    word_part = patch_part = 0.0
    for s in range(b):
        all_patches = [True] * len(patches[s])
        word_part += reference_one_side(words[s], patches[s], word_mask[s], all_patches, word_weights[s], tau)
        patch_part += reference_one_side(patches[s], words[s], all_patches, word_mask[s], patch_weights[s], tau)
    return word_part / b, patch_part / b


def reference_swapped_prediction(img, txt, prototypes, temperature, epsilon, iterations):
    protos = [_unit(p) for p in prototypes]
    z_img = [[_dot(_unit(e), p) for p in protos] for e in img]
    z_txt = [[_dot(_unit(e), p) for p in protos] for e in txt]
    q_img = reference_sinkhorn(z_img, epsilon, iterations)
    q_txt = reference_sinkhorn(z_txt, epsilon, iterations)
    b, k = len(img), len(protos)
    i2t = -sum(
        q_img[n][j] * _log_softmax_at([v / temperature for v in z_txt[n]], j) for n in range(b) for j in range(k)
    )
    t2i = -sum(
        q_txt[n][j] * _log_softmax_at([v / temperature for v in z_img[n]], j) for n in range(b) for j in range(k)
    )
    return (i2t / b + t2i / b) / 2


def reference_importance(attention, mask, low_q=0.1, high_q=0.9):
    out = []
    for a, m in zip(attention, mask):
        vals = np.array([x for x, keep in zip(a, m) if keep], dtype=np.float64)
        lo, hi = np.quantile(vals, low_q), np.quantile(vals, high_q)  # linear interpolation, as torch
        w = [min(max(x, lo), hi) if keep else 0.0 for x, keep in zip(a, m)]
        out.append([x / sum(w) for x in w])
    return out


def reference_ita(img, txt, tau):
    img = [_unit(v) for v in img]
    txt = [_unit(v) for v in txt]
    logits = [[_dot(a, b) / tau for b in txt] for a in img]
    n = len(img)
    i2t = -sum(_log_softmax_at(logits[i], i) for i in range(n)) / n
    t2i = -sum(_log_softmax_at([logits[j][i] for j in range(n)], i) for i in range(n)) / n
    return i2t + t2i


# ----------------------------------------------------------------------------- the losses
@pytest.mark.parametrize("iterations", [1, 3])
def test_sinkhorn_matches_the_loop_reference_and_its_marginals(iterations):
    torch.manual_seed(0)
    scores = torch.randn(6, 10).clamp(-1, 1)  # cosines to 10 prototypes of 6 samples
    got = sinkhorn(scores, 0.05, iterations)
    want = reference_sinkhorn(scores.tolist(), 0.05, iterations)
    assert np.allclose(got.numpy(), want, rtol=1e-4, atol=1e-7)
    assert torch.allclose(got.sum(dim=1), torch.ones(6), atol=1e-5)  # each sample's code sums to 1
    # run to convergence, the prototypes' marginal is equal: each receives B / K of the mass
    many = sinkhorn(scores, 0.05, 200)
    assert np.allclose(reference_sinkhorn(scores.tolist(), 0.05, 200), many.numpy(), rtol=1e-3, atol=1e-7)
    assert torch.allclose(many.sum(dim=0), torch.full((10,), 6 / 10), rtol=1e-3)
    # a small epsilon (scores / eps spanning 1,000): exp underflows float32 rows to 0 / 0 in the plain
    # algorithm; the log-domain rescaling keeps every code finite and of unit mass
    sharp = sinkhorn(scores, 0.002, 3)
    assert torch.isfinite(sharp).all() and torch.allclose(sharp.sum(dim=1), torch.ones(6), atol=1e-5)


def test_swapped_prediction_matches_the_formula():
    torch.manual_seed(1)
    img, txt, protos = torch.randn(5, 4), torch.randn(5, 4), torch.randn(7, 4)
    got = prototype_alignment_loss(img, txt, protos, temperature=0.2, epsilon=0.05, iterations=3)
    want = reference_swapped_prediction(img.tolist(), txt.tolist(), protos.tolist(), 0.2, 0.05, 3)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_token_loss_matches_the_per_sample_loop():
    torch.manual_seed(2)
    b, length, r, d = 3, 5, 4, 3
    words, patches = torch.randn(b, length, d), torch.randn(b, r, d)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    word_weights = token_importance(torch.rand(b, length), mask)
    patch_weights = token_importance(torch.rand(b, r), torch.ones(b, r, dtype=torch.bool))
    got_w, got_p = token_alignment_loss(words, patches, mask, word_weights, patch_weights, 0.1)
    want_w, want_p = reference_token_loss(
        words.tolist(), patches.tolist(), mask.tolist(), word_weights.tolist(), patch_weights.tolist(), 0.1
    )
    assert got_w.item() == pytest.approx(want_w, rel=1e-5)
    assert got_p.item() == pytest.approx(want_p, rel=1e-5)


def test_token_importance_clips_to_quantiles_and_sums_to_one():
    torch.manual_seed(3)
    attention = torch.rand(4, 9)
    mask = torch.rand(4, 9) > 0.3
    mask[:, 0] = True
    got = token_importance(attention, mask)
    want = reference_importance(attention.tolist(), mask.tolist())
    assert np.allclose(got.numpy(), np.array(want), atol=1e-6)
    assert torch.allclose(got.sum(dim=1), torch.ones(4), atol=1e-6) and (got[~mask] == 0).all()
    uniform = token_importance(None, mask)
    assert torch.allclose(uniform, mask.float() / mask.sum(dim=1, keepdim=True))


def _batch(b, seed=4, length=4, r=6, d=8):
    torch.manual_seed(seed)
    mask = torch.zeros(b, length, dtype=torch.bool)
    mask[:, 1] = True  # one word each: the smallest report
    if b > 1:
        mask[0, 1:3] = True
    tokens = {
        "words": torch.randn(b, length, d, requires_grad=True),
        "word_mask": mask,
        "patches": torch.randn(b, r, d, requires_grad=True),
        "word_weights": token_importance(torch.rand(b, length), mask),
        "patch_weights": token_importance(torch.rand(b, r), torch.ones(b, r, dtype=torch.bool)),
    }
    img = torch.randn(b, d, requires_grad=True)
    txt = torch.randn(b, d, requires_grad=True)
    return img, txt, tokens


def test_total_is_the_weighted_sum_and_cpa_waits_for_its_start():
    img, txt, tokens = _batch(4)
    protos = torch.nn.Parameter(torch.randn(5, 8))
    scale = torch.tensor(math.log(1 / 0.07))
    settings = {"ita_weight": 0.5, "cta_weight": 2.0, "cpa_weight": 3.0, "num_prototypes": 5}
    loss, parts = mgca_loss(img, txt, scale, tokens, protos, settings)
    assert parts["ita_loss"].item() == pytest.approx(reference_ita(img.tolist(), txt.tolist(), 0.07), rel=1e-5)
    w, p = token_alignment_loss(
        tokens["words"], tokens["patches"], tokens["word_mask"], tokens["word_weights"], tokens["patch_weights"]
    )
    assert parts["cta_loss"].item() == pytest.approx((w + p).item(), rel=1e-6)
    want = 0.5 * parts["ita_loss"] + 2.0 * parts["cta_loss"] + 3.0 * parts["cpa_loss"]
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    loss.backward()
    assert protos.grad is not None and protos.grad.abs().sum() > 0  # gradients reach the prototypes
    assert all(t.grad.abs().sum() > 0 for t in (img, txt, tokens["words"], tokens["patches"]))
    protos.grad = None
    before, parts = mgca_loss(img, txt, scale, tokens, protos, settings, use_cpa=False)
    assert before.item() == pytest.approx((0.5 * parts["ita_loss"] + 2.0 * parts["cta_loss"]).item(), rel=1e-6)
    before.backward()
    assert protos.grad is None  # before the start step CPA is logged only


@pytest.mark.parametrize("b", [2, 3])
def test_tiny_batches_give_finite_losses_and_gradients(b):
    img, txt, tokens = _batch(b, seed=5)
    protos = torch.nn.Parameter(torch.randn(MGCA_LOSS["num_prototypes"], 8))
    loss, parts = mgca_loss(img, txt, torch.tensor(math.log(1 / 0.07)), tokens, protos)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in parts.values())
    for t in (img, txt, tokens["words"], tokens["patches"], protos):
        assert torch.isfinite(t.grad).all()


def test_mgca_loss_rejects_reports_without_words():
    img, txt, tokens = _batch(2)
    tokens["word_mask"] = torch.zeros_like(tokens["word_mask"])
    with pytest.raises(ValueError, match="at least one word"):
        mgca_loss(img, txt, torch.tensor(2.0), tokens, torch.randn(4, 8))


# ----------------------------------------------------------------------------- token importance source
def test_cls_attention_equals_the_eager_attention_maps():
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    from genssl_hf.training.mgca import cls_attention, has_cls_attention

    torch.manual_seed(0)
    vit = ViTModel(
        ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
            attn_implementation="eager",
        )
    ).eval()
    out = vit(pixel_values=torch.randn(2, 3, 32, 32), output_attentions=True, output_hidden_states=True)
    assert torch.allclose(cls_attention(vit, out.hidden_states), out.attentions[-1][:, :, 0].mean(dim=1), atol=1e-6)
    bert = BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            attn_implementation="eager",
        )
    ).eval()
    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    out = bert(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    got = cls_attention(bert, out.hidden_states, mask)
    assert torch.allclose(got, out.attentions[-1][:, :, 0].mean(dim=1), atol=1e-6)
    assert (got[1, 3:] == 0).all()
    from genssl_hf.training.dual_encoder import build_dual_encoder

    model, _, _ = build_dual_encoder("cnn-tiny", "tiny-bert", projection_dim=16, image_size=32)
    assert not has_cls_attention(model.vision_model) and has_cls_attention(model.text_model)  # ConvNeXt: uniform


def test_token_cache_carries_the_cls_attention():
    from genssl_hf.training.dual_encoder import _text_tower
    from genssl_hf.training.mgca import MgcaTokenFeatures, cls_attention
    from genssl_hf.training.vlp_loss import text_group_ids

    torch.manual_seed(0)
    text, tokenizer, _ = _text_tower("tiny-bert")
    text.eval()
    texts = ["No acute abnormality.", "Small left pleural effusion.", "No acute abnormality."]
    cache = MgcaTokenFeatures(text, tokenizer, texts, 32)
    rows, mask = cache(text_group_ids(texts))
    tok = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = text(**tok, output_hidden_states=True)
    attn = cls_attention(text, out.hidden_states, tok["attention_mask"])
    m = mask[..., None]
    assert torch.equal(mask, tok["attention_mask"])
    assert torch.allclose(rows[..., :-1] * m, out.last_hidden_state * m, atol=1e-5)
    assert torch.allclose(rows[..., -1] * mask, attn * mask, atol=1e-6)


# ----------------------------------------------------------------------------- options
def test_bad_mgca_options_fail_before_training(tmp_path):
    from genssl_hf.training.vlp import build_parser, pretrain_vlp

    base = ["--pairs", "phantom:8", "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "o")]
    cases = [
        (["--loss", "convirt", "--mgca_cpa_weight", "0.5"], "--mgca_cpa_weight applies to --method mgca only"),
        (["--loss", "mgca", "--mgca_ita_weight", "-1"], "--mgca_ita_weight must be >= 0"),
        (["--loss", "mgca", "--mgca_num_prototypes", "1"], "--mgca_num_prototypes must be >= 2"),
        (["--loss", "mgca", "--mgca_sinkhorn_epsilon", "0"], "--mgca_sinkhorn_epsilon must be > 0"),
        (["--loss", "mgca", "--mgca_sinkhorn_iterations", "0"], "--mgca_sinkhorn_iterations must be >= 1"),
        (["--loss", "mgca", "--mgca_cpa_start_step", "-2"], "--mgca_cpa_start_step must be >= 0"),
        (
            ["--loss", "mgca", "--mgca_ita_weight", "0", "--mgca_cta_weight", "0", "--mgca_cpa_weight", "0"],
            "nothing to train",
        ),
    ]
    for extra, message in cases:
        with pytest.raises(ValueError, match=message):
            pretrain_vlp(build_parser().parse_args([*base, *extra]))
        assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--loss", "mgca", "--mgca_token_weights", "cls"])


def test_mgca_heads_reject_what_they_cannot_honour():
    from genssl_hf.training.dual_encoder import build_dual_encoder
    from genssl_hf.training.mgca import attach_mgca_heads

    model, _, _ = build_dual_encoder("tiny", "tiny-bert", projection_dim=16, image_size=32)
    with pytest.raises(ValueError, match="one process"):
        attach_mgca_heads(model, 2)
    with pytest.raises(ValueError, match="--image_to_text_weight"):
        attach_mgca_heads(model, 1, {"image_to_text_weight": 0.75})
    heads = attach_mgca_heads(model, 1, {"num_prototypes": 12})
    assert heads.prototypes.weight.shape == (12, 16) and model.mgca_heads is heads


# ----------------------------------------------------------------------------- pre-training
@pytest.mark.slow
def test_mgca_pretraining_retrieves_above_chance_and_exports(tmp_path):
    from transformers import VisionTextDualEncoderModel, ViTModel

    from genssl_hf.cli.pretrain import main as pretrain_main
    from genssl_hf.data.pairs import phantom_pairs
    from genssl_hf.evaluation.vlp import evaluate_dual_encoder
    from genssl_hf.training.mgca import MGCA_HEADS_FILE, load_mgca_heads
    from genssl_hf.training.vlp import export_image_tower
    from test_gloria import GLORIA_CI  # the same recipe and budget as GLoRIA's CI test

    torch.set_num_threads(1)
    out = tmp_path / "mgca"
    assert pretrain_main(["--method", "mgca", *GLORIA_CI, "--output_dir", str(out)]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    curve = [v for _, v in summary["loss_curve"]]
    assert all(math.isfinite(v) for v in curve)
    loss_cfg = json.loads((out / "run_config.json").read_text())["loss"]
    assert loss_cfg["name"] == "mgca" and loss_cfg["cpa_start_step"] == 16  # one epoch: 512 / 32
    assert loss_cfg["token_weight_sources"] == {"image": "cls-attention", "text": "cls-attention"}
    r = evaluate_dual_encoder(out, pairs=phantom_pairs(300, size=32, split="test"), n_bootstrap=0)["retrieval"]
    for direction in ("image_to_text", "text_to_image"):
        assert r[direction]["R@5"] >= 4 * r[direction]["chance"]["R@5"], r
    model, info = VisionTextDualEncoderModel.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    heads = load_mgca_heads(out)
    assert (out / MGCA_HEADS_FILE).is_file() and heads.prototypes.weight.shape == (64, model.config.projection_dim)
    tower = export_image_tower(out, tmp_path / "tower")
    vit = ViTModel.from_pretrained(tower)
    assert torch.equal(
        vit.embeddings.patch_embeddings.projection.weight,
        model.vision_model.embeddings.patch_embeddings.projection.weight,
    )
    assert not list(out.glob("*.tmp"))
