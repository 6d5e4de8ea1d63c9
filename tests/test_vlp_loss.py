"""The image-report InfoNCE against a plain reference implementation, and gathered across 2 processes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from genssl_hf.training.vlp_loss import LOSS_PRESETS, image_text_infonce, text_group_ids

REPO = Path(__file__).resolve().parents[1]


def reference_loss(img, txt, scale, weight, groups=None):
    """Loop-by-loop bidirectional InfoNCE (ConVIRT eq. 2-3): for each pair, -log of the softmax mass on
    its positives (every column with the same report when groups are given), both directions."""
    img = [[x / math.sqrt(sum(y * y for y in v)) for x in v] for v in img.tolist()]
    txt = [[x / math.sqrt(sum(y * y for y in v)) for x in v] for v in txt.tolist()]
    n = len(img)
    groups = list(range(n)) if groups is None else groups.tolist()
    t = math.exp(scale)

    def direction(a, b):
        total = 0.0
        for i in range(n):
            logits = [t * sum(x * y for x, y in zip(a[i], b[j])) for j in range(n)]
            m = max(logits)
            log_z = m + math.log(sum(math.exp(v - m) for v in logits))
            pos = [j for j in range(n) if groups[j] == groups[i]]
            total += -sum((logits[j] - log_z) / len(pos) for j in pos)
        return total / n

    return weight * direction(img, txt) + (1 - weight) * direction(txt, img)


@pytest.mark.parametrize("loss", sorted(LOSS_PRESETS))
@pytest.mark.parametrize("with_groups", [False, True])
def test_infonce_matches_reference(loss, with_groups):
    torch.manual_seed(1)
    img, txt = torch.randn(7, 4), torch.randn(7, 4)
    preset = LOSS_PRESETS[loss]
    scale = torch.tensor(math.log(1 / preset["temperature"]))
    groups = torch.tensor([0, 1, 0, 2, 3, 2, 4]) if with_groups else None
    got = image_text_infonce(img, txt, scale, image_to_text_weight=preset["image_to_text_weight"], groups=groups)
    want = reference_loss(img, txt, scale.item(), preset["image_to_text_weight"], groups)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_infonce_without_duplicates_equals_plain_cross_entropy_and_clip():
    """Unique groups reduce to the one-hot loss; lambda = 0.5 with T from the model is CLIP's loss."""
    from transformers.models.vision_text_dual_encoder.modeling_vision_text_dual_encoder import (
        image_text_contrastive_loss as clip_loss,
    )

    torch.manual_seed(2)
    img, txt = torch.randn(6, 3), torch.randn(6, 3)
    scale = torch.tensor(1.7)
    plain = image_text_infonce(img, txt, scale, image_to_text_weight=0.5)
    assert plain.item() == pytest.approx(
        image_text_infonce(img, txt, scale, image_to_text_weight=0.5, groups=torch.arange(6)).item(), rel=1e-6
    )
    i, t = torch.nn.functional.normalize(img, dim=-1), torch.nn.functional.normalize(txt, dim=-1)
    assert plain.item() == pytest.approx(clip_loss(scale.exp() * t @ i.t()).item(), rel=1e-5)


def test_convirt_weights_the_two_directions():
    torch.manual_seed(3)
    img, txt = torch.randn(5, 3), torch.randn(5, 3)
    scale = torch.tensor(math.log(10.0))
    i2t = image_text_infonce(img, txt, scale, image_to_text_weight=1.0)
    t2i = image_text_infonce(img, txt, scale, image_to_text_weight=0.0)
    mixed = image_text_infonce(img, txt, scale, image_to_text_weight=0.75)
    assert mixed.item() == pytest.approx(0.75 * i2t.item() + 0.25 * t2i.item(), rel=1e-6)
    assert i2t.item() != pytest.approx(t2i.item())


def test_infonce_gradient_matches_reference_autograd():
    torch.manual_seed(4)
    img, txt = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    scale = torch.tensor(2.0, requires_grad=True)
    image_text_infonce(img, txt, scale, image_to_text_weight=0.75).backward()
    # the same loss through an independent dense formulation
    img2, txt2, scale2 = (
        img.detach().clone().requires_grad_(),
        txt.detach().clone().requires_grad_(),
        scale.detach().clone().requires_grad_(),
    )
    i, t = img2 / img2.norm(dim=1, keepdim=True), txt2 / txt2.norm(dim=1, keepdim=True)
    s = scale2.exp() * i @ t.t()
    ref = 0.75 * (-torch.diagonal(s.log_softmax(1))).mean() + 0.25 * (-torch.diagonal(s.t().log_softmax(1))).mean()
    ref.backward()
    for a, b in ((img.grad, img2.grad), (txt.grad, txt2.grad), (scale.grad, scale2.grad)):
        assert torch.allclose(a, b, atol=1e-6)


def test_text_group_ids_equal_for_equal_text():
    ids = text_group_ids(["No edema.", "Big cardiomegaly.", "No edema."])
    assert ids[0] == ids[2] != ids[1] and ids.dtype == torch.int64


def test_infonce_rejects_bad_shapes():
    with pytest.raises(ValueError, match="embeddings"):
        image_text_infonce(torch.randn(4, 3), torch.randn(3, 3), torch.tensor(1.0))


@pytest.mark.slow
def test_gathered_loss_two_processes_equals_one_process(tmp_path, two_cpu_processes):
    """2 CPU processes, each with half of the batch: the mean of their losses equals the 1-process loss
    on the whole batch, and each process's gradient (averaged as DDP does) equals the 1-process one."""
    proc = two_cpu_processes([REPO / "tests" / "_vlp_gather_worker.py", tmp_path])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world"] == 2 for r in ranks)

    g = torch.Generator().manual_seed(0)
    img_all, txt_all = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    groups_all = torch.tensor([0, 1, 2, 1, 3, 4, 0, 5])
    for use_groups in (False, True):
        img, txt = img_all.clone().requires_grad_(True), txt_all.clone().requires_grad_(True)
        scale = torch.tensor(2.3, requires_grad=True)
        loss = image_text_infonce(
            img, txt, scale, image_to_text_weight=0.75, groups=groups_all if use_groups else None, gather=False
        )
        loss.backward()
        res = [r["result"][str(use_groups)] for r in ranks]
        assert sum(r["loss"] for r in res) / 2 == pytest.approx(loss.item(), rel=1e-5)
        # all_gather_with_grad hands each process the sum over processes of d loss_p / d its rows;
        # DDP's gradient averaging divides by the world size
        got_img = torch.tensor(res[0]["img_grad"] + res[1]["img_grad"]) / 2
        got_txt = torch.tensor(res[0]["txt_grad"] + res[1]["txt_grad"]) / 2
        assert torch.allclose(got_img, img.grad, atol=1e-6)
        assert torch.allclose(got_txt, txt.grad, atol=1e-6)
        assert sum(r["scale_grad"] for r in res) / 2 == pytest.approx(scale.grad.item(), rel=1e-5)
