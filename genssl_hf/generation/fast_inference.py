"""Speed helpers of the pipeline's denoising loop that leave its numbers unchanged: whether the
UNet's weights are channels-last, and a per-context memo of the cross-attention key / value
projections (the text context does not change between denoising steps)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def _is_channels_last(module: torch.nn.Module) -> bool:
    w = next((p for p in module.parameters() if p.dim() == 4 and p.shape[-1] > 1), None)
    return w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


@contextlib.contextmanager
def _memoize_cross_attention_kv(unet: torch.nn.Module):
    """Within the block, the key/value projections of the text context in every cross-attention
    layer are computed once per context tensor instead of once per denoising step (the context
    does not change between steps). Keyed on tensor identity, storage and version, so a different
    or modified context is recomputed; the original forwards are restored on exit."""
    patched = []
    for name, mod in unet.named_modules():
        if name.endswith(("attn2.to_k", "attn2.to_v")) and isinstance(mod, torch.nn.Linear):
            memo: dict[str, Any] = {}

            def forward(x, _mod=mod, _memo=memo):
                # inference tensors carry no version counter (and cannot be modified in place)
                key = (id(x), x.data_ptr(), -1 if x.is_inference() else x._version, x.shape, x.dtype)
                if _memo.get("key") != key or _memo.get("ref") is not x:
                    _memo["key"], _memo["ref"], _memo["out"] = (
                        key,
                        x,
                        torch.nn.functional.linear(x, _mod.weight, _mod.bias),
                    )
                return _memo["out"]

            mod.forward = forward
            patched.append((mod, memo))
    try:
        yield
    finally:
        for mod, memo in patched:
            del mod.forward  # back to the class forward
            memo.clear()
