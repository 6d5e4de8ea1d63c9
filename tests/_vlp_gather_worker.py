"""Run under `accelerate launch --num_processes 2`: each process takes its half of a fixed global batch,
computes the gathered image-report loss and its gradients, and writes them for the test to compare
with the 1-process loss on the whole batch."""

import json
import sys

import torch
from accelerate import PartialState

from genssl_hf.training.vlp_loss import image_text_infonce

out = sys.argv[1]
state = PartialState(cpu=True)  # gloo process group on CPU (the launcher sets rank and world size)
g = torch.Generator().manual_seed(0)
n, d = 8, 5
img_all = torch.randn(n, d, generator=g)
txt_all = torch.randn(n, d, generator=g)
groups_all = torch.tensor([0, 1, 2, 1, 3, 4, 0, 5])
b = n // state.num_processes
rows = slice(state.process_index * b, (state.process_index + 1) * b)
result = {}
for use_groups in (False, True):
    img = img_all[rows].clone().requires_grad_(True)
    txt = txt_all[rows].clone().requires_grad_(True)
    scale = torch.tensor(2.3, requires_grad=True)
    loss = image_text_infonce(
        img, txt, scale, image_to_text_weight=0.75, groups=groups_all[rows] if use_groups else None, gather=True
    )
    loss.backward()
    result[str(use_groups)] = {
        "loss": loss.item(),
        "img_grad": img.grad.tolist(),
        "txt_grad": txt.grad.tolist(),
        "scale_grad": scale.grad.item(),
    }
with open(f"{out}/rank{state.process_index}.json", "w") as fh:
    json.dump({"rank": state.process_index, "world": state.num_processes, "result": result}, fh)
state.wait_for_everyone()
state.destroy_process_group()  # not left to interpreter exit (see training.common.release_process_group)
