"""The matmul attention kernel: same outputs and gradients as transformers' eager path and SDPA,
picked by ``auto`` for bf16 on a CPU, and usable by name in saved / reloaded ViT models."""

import pytest
import torch
from transformers import ViTConfig, ViTMAEConfig, ViTMAEForPreTraining, ViTModel

from genssl_hf.training.attention import MATMUL_ATTENTION, resolve_attn_implementation

torch.set_num_threads(1)


def _qkv(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 4, 17, 8, generator=g).mul(2).to(dtype).requires_grad_() for _ in range(3)]


def _grads(fn, dtype):
    q, k, v = _qkv(dtype)
    out = fn(q, k, v)
    out.float().square().sum().backward()
    return out.detach().float(), [t.grad.float() for t in (q, k, v)]


def test_matches_sdpa_fp32_and_eager_bf16():
    from transformers.models.vit_mae.modeling_vit_mae import eager_attention_forward

    from genssl_hf.training.attention import matmul_attention_forward

    module = torch.nn.Module().eval()
    ours = lambda q, k, v: matmul_attention_forward(module, q, k, v, None)[0]  # noqa: E731
    sdpa = lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)  # noqa: E731
    eager = lambda q, k, v: eager_attention_forward(module, q, k, v, None)[0]  # noqa: E731

    out, grads = _grads(ours, torch.float32)
    ref_out, ref_grads = _grads(sdpa, torch.float32)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)

    # bf16: as accurate as transformers' eager path (scores in bf16, softmax accumulated in fp32), judged
    # against the fp32 result; the two round at different points, so they are not bit-equal
    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    out, grads = _grads(ours, torch.bfloat16)
    eager_out, eager_grads = _grads(eager, torch.bfloat16)
    assert rel(out, ref_out) < 1.5 * rel(eager_out, ref_out) + 1e-3
    for a, e, b in zip(grads, eager_grads, ref_grads):
        assert rel(a, b) < 1.5 * rel(e, b) + 1e-3


def test_auto_resolution_and_bad_name():
    assert resolve_attn_implementation("auto", "cpu", "bf16") == MATMUL_ATTENTION
    assert resolve_attn_implementation("auto", "cpu", "no") == "sdpa"
    assert resolve_attn_implementation("auto", torch.device("cuda", 0), "bf16") == "sdpa"
    assert resolve_attn_implementation("eager", "cpu", "bf16") == "eager"
    with pytest.raises(ValueError, match="--attn_implementation 'flash'"):
        resolve_attn_implementation("flash", "cpu", "bf16")


def test_vitmae_with_matmul_attention_equals_sdpa_and_saves_portably(tmp_path):
    cfg = ViTMAEConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=64,
        mask_ratio=0.75,
    )
    torch.manual_seed(0)
    ours = ViTMAEForPreTraining._from_config(cfg, attn_implementation=MATMUL_ATTENTION)
    ref = ViTMAEForPreTraining._from_config(cfg, attn_implementation="sdpa")
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(1))
    loss = ours(pixel_values=x, noise=noise).loss
    ref_loss = ref(pixel_values=x, noise=noise).loss
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    loss.backward()
    ref_loss.backward()
    for (name, p), p_ref in zip(ours.named_parameters(), ref.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-5, rtol=1e-4, msg=name)

    # the attention choice is a runtime setting: a saved model reloads anywhere with the default kernel
    ours.save_pretrained(tmp_path / "mae")
    assert MATMUL_ATTENTION not in (tmp_path / "mae" / "config.json").read_text()
    enc = ViTModel.from_pretrained(tmp_path / "mae", add_pooling_layer=False)
    assert isinstance(enc.config, ViTConfig)
