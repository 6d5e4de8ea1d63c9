"""Worker for tests/test_ssl_distributed.py: one forward / backward of each method on a fixed global
batch of views, split across however many processes launched it; writes the global loss, the
averaged gradients and (MoCo) the queue after the step to ``sys.argv[1]`` (main process)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from genssl_hf.models import build_backbone  # noqa: E402
from genssl_hf.training.common import make_accelerator  # noqa: E402
from genssl_hf.training.ssl.methods import build_method  # noqa: E402

CASES = [("simclr", "tiny"), ("simclr", "resnet-tiny"), ("moco_v2", "tiny"), ("simsiam", "tiny")]
GLOBAL_BATCH = 8


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    acc = make_accelerator(None, cpu=True, mixed_precision="no")
    results = {}
    for method, backbone in CASES:
        torch.manual_seed(0)
        kw = {"patch_size": 8} if backbone == "tiny" else {}
        model = build_method(method, build_backbone(backbone, image_size=32, **kw), "tiny", queue_size=32)
        g = torch.Generator().manual_seed(1)
        v1, v2 = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g), torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g)
        b = GLOBAL_BATCH // acc.num_processes
        sl = slice(acc.process_index * b, (acc.process_index + 1) * b)
        ddp = acc.prepare(model)
        loss, _ = ddp([v1[sl], v2[sl]])
        acc.backward(loss)
        mean_loss = acc.reduce(loss.detach(), reduction="mean")
        inner = acc.unwrap_model(ddp)
        grads = {n: p.grad.detach().clone() for n, p in inner.named_parameters() if p.grad is not None}
        entry = {"loss": mean_loss.item(), "grads": grads}
        if method == "moco_v2":
            entry["queue"] = inner.queue.detach().clone()
            entry["queue_ptr"] = int(inner.queue_ptr)
        results[f"{method}/{backbone}"] = entry
        acc.wait_for_everyone()
    if acc.is_main_process:
        torch.save(results, out_path)
    acc.wait_for_everyone()
    acc.state.destroy_process_group()  # not left to interpreter exit (see training.common.release_process_group)


if __name__ == "__main__":
    main(sys.argv[1])
