"""Self-supervised losses, heads and optimiser against plain reference implementations written here
(loops over samples, on random inputs): values and gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from genssl_hf.training.ssl.heads import GlobalBatchNorm1d, GlobalBatchNorm2d, MLPHead, convert_to_global_bn
from genssl_hf.training.ssl.losses import (
    embedding_std,
    moco_infonce_loss,
    negative_cosine_similarity,
    nt_xent_loss,
    rotation_loss,
    simsiam_loss,
    byol_loss,
)
from genssl_hf.training.ssl.optim import LARS, build_ssl_optimizer
from genssl_hf.training.ssl.transforms import SSLViews, rotate_batch_4way

torch.set_num_threads(1)


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def reference_nt_xent(z1, z2, t):
    """SimCLR eq. 1, literally: l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t), averaged
    over all 2N ordered positive pairs."""
    z = [list(map(float, r)) for r in torch.cat([z1, z2])]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denom = sum(math.exp(_cos(z[i], z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(_cos(z[i], z[j]) / t) / denom)
    return total / (2 * n)


def reference_moco(q, k, queue, t):
    total = 0.0
    for qi, ki in zip(q.tolist(), k.tolist()):
        pos = math.exp(_cos(qi, ki) / t)
        neg = sum(math.exp(_cos(qi, kn) / t) for kn in queue.tolist())
        total += -math.log(pos / (pos + neg))
    return total / len(q)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_nt_xent_matches_reference(t):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    assert nt_xent_loss(z1, z2, t).item() == pytest.approx(reference_nt_xent(z1, z2, t), rel=1e-5)


def test_nt_xent_gradient_matches_autograd_of_a_dense_reference():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)

    def dense(a, b, t=0.2):  # the same formula without masking tricks: explicit sums per anchor
        z = F.normalize(torch.cat([a, b]), dim=1)
        n = a.shape[0]
        losses = []
        for i in range(2 * n):
            sims = torch.stack([z[i] @ z[k] for k in range(2 * n) if k != i]) / t
            losses.append(-(z[i] @ z[(i + n) % (2 * n)] / t) + torch.logsumexp(sims, 0))
        return torch.stack(losses).mean()

    ours = torch.autograd.grad(nt_xent_loss(z1, z2, 0.2), (z1, z2))
    ref = torch.autograd.grad(dense(z1, z2), (z1, z2))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.to(b.dtype), b, rtol=1e-4, atol=1e-6)


def test_moco_matches_reference_and_keys_get_no_gradient():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(4, 6, generator=g, requires_grad=True)
    k = torch.randn(4, 6, generator=g, requires_grad=True)
    queue = F.normalize(torch.randn(10, 6, generator=g), dim=1)
    loss = moco_infonce_loss(q, k, queue, 0.2)
    assert loss.item() == pytest.approx(reference_moco(q.detach(), k.detach(), queue, 0.2), rel=1e-4)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None


def test_simsiam_matches_reference_and_stop_gradient():
    g = torch.Generator().manual_seed(3)
    p1, p2, z1, z2 = (torch.randn(5, 7, generator=g, requires_grad=True) for _ in range(4))
    ref = (
        0.5 * -sum(_cos(a, b) for a, b in zip(p1.tolist(), z2.tolist())) / 5
        + 0.5 * -sum(_cos(a, b) for a, b in zip(p2.tolist(), z1.tolist())) / 5
    )
    loss = simsiam_loss(p1, p2, z1, z2)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    loss.backward()
    assert z1.grad is None and z2.grad is None  # stop-gradient on the target branch
    assert p1.grad.abs().sum() > 0
    z = torch.randn(3, 4, requires_grad=True)
    negative_cosine_similarity(torch.randn(3, 4), z, stop_gradient=False).backward()
    assert z.grad.abs().sum() > 0  # and without it the gradient reaches z


def test_byol_matches_reference_and_targets_get_no_gradient():
    """BYOL: sum over both directions of the batch mean of ||p/|p| - t/|t|||^2, written out in plain Python."""
    g = torch.Generator().manual_seed(5)
    p1, p2, t1, t2 = (torch.randn(6, 4, generator=g, requires_grad=True) for _ in range(4))

    def sq_dist_of_unit_vectors(a, b):
        na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
        return sum((x / na - y / nb) ** 2 for x, y in zip(a, b))

    ref = (
        sum(sq_dist_of_unit_vectors(a, b) for a, b in zip(p1.tolist(), t2.tolist())) / 6
        + sum(sq_dist_of_unit_vectors(a, b) for a, b in zip(p2.tolist(), t1.tolist())) / 6
    )
    loss = byol_loss(p1, p2, t1, t2)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    loss.backward()
    assert t1.grad is None and t2.grad is None and p1.grad.abs().sum() > 0
    assert byol_loss(t2, t1, t1, t2).item() == pytest.approx(0.0, abs=1e-5)  # perfect predictions
    with pytest.raises(ValueError, match="byol_loss expects"):
        byol_loss(torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 5), torch.randn(3, 4))


def test_rotation_loss_and_four_rotations():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(8, 4, generator=g)
    labels = torch.randint(0, 4, (8,), generator=g)
    ref = (
        sum(
            -math.log(math.exp(row[y]) / sum(math.exp(v) for v in row))
            for row, y in zip(logits.tolist(), labels.tolist())
        )
        / 8
    )
    assert rotation_loss(logits, labels).item() == pytest.approx(ref, rel=1e-5)
    x = torch.zeros(2, 1, 4, 4)
    x[:, 0, 0, 3] = 1.0  # a bright top-right corner
    rotated, y = rotate_batch_4way(x)
    assert rotated.shape == (8, 1, 4, 4) and y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    corners = [(0, 3), (0, 0), (3, 0), (3, 3)]  # counter-clockwise quarter turns move the corner
    for k, (r, c) in enumerate(corners):
        assert rotated[2 * k, 0, r, c] == 1.0
    with pytest.raises(ValueError, match="\\(B, 4\\)"):
        rotation_loss(torch.randn(3, 5), torch.zeros(3))


def test_embedding_std_collapse_monitor():
    assert embedding_std(torch.ones(16, 32)).item() == pytest.approx(0.0, abs=1e-6)
    spread = embedding_std(torch.randn(4096, 32, generator=torch.Generator().manual_seed(0))).item()
    assert spread == pytest.approx(1 / math.sqrt(32), rel=0.05)


def test_global_batch_norm_is_batch_norm_in_one_process():
    torch.manual_seed(0)
    for ref_cls, ours_cls, shape in (
        (torch.nn.BatchNorm1d, GlobalBatchNorm1d, (8, 5)),
        (torch.nn.BatchNorm2d, GlobalBatchNorm2d, (4, 5, 3, 3)),
    ):
        ref, ours = ref_cls(5), ours_cls(5)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(*shape)
        torch.testing.assert_close(ours(x), ref(x))
        torch.testing.assert_close(ours.running_var, ref.running_var)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    keys = list(net.state_dict())
    convert_to_global_bn(net)
    assert isinstance(net[1], GlobalBatchNorm1d) and list(net.state_dict()) == keys


def test_global_batch_norm_statistics_keep_their_digits_when_the_mean_dwarfs_the_spread(monkeypatch):
    """The multi-process path (here with the all-reduce as the identity of a one-process world) takes
    the variance in two passes: features with mean 300 and spread 1 (mean^2 / var = 9e4, as in a few
    channels of the ViT-B MoCo head) normalise like a float64 batch norm; the one-pass
    E[x^2] - mean^2 lost 11 % of the variance here in float32 (output off by 0.06)."""
    from genssl_hf.training.ssl import heads

    monkeypatch.setattr(heads, "world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, *a, **k: t)
    torch.manual_seed(0)
    x = 300.0 + torch.randn(4, 6)
    ref = torch.nn.BatchNorm1d(6).double()
    ours = GlobalBatchNorm1d(6)
    y_ref = ref(x.double())
    x.requires_grad_(True)
    y = ours(x)
    assert (y.double() - y_ref).abs().max().item() < 1e-3
    torch.testing.assert_close(ours.running_var.double(), ref.running_var, rtol=1e-4, atol=1e-6)
    y.pow(3).sum().backward()  # gradients flow through both all-reduces
    xd = x.detach().double().requires_grad_(True)
    torch.nn.BatchNorm1d(6).double()(xd).pow(3).sum().backward()
    assert (x.grad.double() - xd.grad).abs().max().item() < 1e-2 * xd.grad.abs().max().item()


def test_mlp_heads_shapes():
    h = MLPHead(16, 32, 8, 3, bn=True, last_bn=True, last_bn_affine=False)
    assert h(torch.randn(4, 16)).shape == (4, 8)
    assert sum(isinstance(m, GlobalBatchNorm1d) for m in h.modules()) == 3
    assert not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in MLPHead(16, 32, 8, 2, bn=False).modules()
    )


def test_lars_step_matches_formula():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    opt = build_ssl_optimizer(lin, "lars", lr=0.5, weight_decay=1e-2, momentum=0.9)
    assert isinstance(opt, LARS)
    lin(torch.randn(5, 4)).pow(2).sum().backward()
    gw, gb = lin.weight.grad.clone(), lin.bias.grad.clone()
    opt.step()
    d = gw + 1e-2 * w0
    trust = 0.001 * w0.norm() / (d.norm() + 1e-8)
    torch.testing.assert_close(lin.weight.detach(), w0 - 0.5 * trust * d)
    torch.testing.assert_close(lin.bias.detach(), b0 - 0.5 * gb)  # no decay, no trust ratio on biases


def test_views_shapes_adain_and_bad_settings():
    torch.manual_seed(0)
    x = (torch.rand(6, 1, 40, 40) * 255).to(torch.uint8)
    views = SSLViews(32, brightness=0.0, contrast=0.0, blur_p=0.0, image_mean=0.0, image_std=1.0)
    v = views(x)
    assert v.shape == (6, 3, 32, 32) and torch.equal(v[:, 0], v[:, 1])
    # AdaIN per view: every view has exactly the reference mean / std
    torch.testing.assert_close(v[:, 0].mean(dim=(1, 2)), torch.full((6,), 0.5062), atol=1e-4, rtol=0)
    torch.testing.assert_close(v[:, 0].std(dim=(1, 2), correction=0), torch.full((6,), 0.2732), atol=1e-3, rtol=0)
    a, b = views(x), views(x)
    assert not torch.equal(a, b)  # two calls, two different views
    with pytest.raises(ValueError, match="crop scale"):
        SSLViews(32, crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="adain_mode"):
        SSLViews(32, adain_mode="sideways")
