#!/usr/bin/env python
"""``AdaINImageProcessor`` against transformers' ``ViTImageProcessor`` (PIL backend) on the same images.

Both turn PIL chest X-rays into 224 x 224 x 3 ``pixel_values`` tensors in batches; ours also converts to
grayscale and applies AdaIN (its extra work), ViT's does RGB conversion, resize, rescale and normalise.
Images: phantom X-rays at ``--source_size`` (default 512 px, like downsampled clinical images), or the real
Kermany 224 px JPEGs with ``--real`` (read-only, never written anywhere). Medians over ``--repeats``.

    python benchmarks/bench_processor.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import finish, machine_info, print_machine  # noqa: E402


def load_images(n: int, size: int, real: bool):
    from PIL import Image

    if real:
        root = Path(__file__).resolve().parents[2] / "shared" / "data" / "kermany-pneumonia-224"
        files = sorted(root.rglob("*.jpeg"))[:n] or sorted(root.rglob("*.jpg"))[:n]
        if not files:
            raise SystemExit(f"no images under {root}")
        return [Image.open(f).convert("L") for f in files], f"kermany-pneumonia-224 ({len(files)} JPEGs)"
    from genssl_hf.data.phantom import phantom_dataset

    ds = phantom_dataset(min(n, 64), size=size, seed=0)
    imgs = list(ds["image"])
    imgs = (imgs * (n // len(imgs) + 1))[:n]
    return imgs, f"phantom {size}px"


def throughput(proc, images, batch: int, repeats: int) -> float:
    proc(images[:batch], return_tensors="pt")  # warm-up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(0, len(images), batch):
            proc(images[i : i + batch], return_tensors="pt")
        rates.append(len(images) / (time.perf_counter() - t))
    return statistics.median(rates)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--num_images", type=int, default=None)
    ap.add_argument("--source_size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--real", action="store_true", help="use ../shared/data/kermany-pneumonia-224")
    a = ap.parse_args(argv)
    n = a.num_images or (128 if a.quick else 512)
    repeats = a.repeats or (3 if a.quick else 5)
    info = machine_info()
    print_machine(info)

    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    from genssl_hf.processing import AdaINImageProcessor

    images, source = load_images(n, a.source_size, a.real)
    ours = AdaINImageProcessor(size=224)
    vit = ViTImageProcessorPil(size={"height": 224, "width": 224}, do_convert_rgb=True)  # grayscale inputs
    load = os.getloadavg()[0]
    r_ours, r_vit = [], []
    for _ in range(repeats):  # interleave so load changes hit both alike
        r_ours.append(throughput(ours, images, a.batch, 1))
        r_vit.append(throughput(vit, images, a.batch, 1))
    o, v = statistics.median(r_ours), statistics.median(r_vit)
    print(f"{source}, {len(images)} images, batch {a.batch}, {repeats} repeats, load avg {load:.1f}")
    print(f"AdaINImageProcessor {o:8.1f} img/s   ViTImageProcessor (PIL) {v:8.1f} img/s   ratio {o / v:.2f}x")
    print(
        json.dumps(
            {
                "name": "adain_processor_images_per_s",
                "value": round(o, 1),
                "unit": "images/s",
                "baseline": round(v, 1),
                "ratio": round(o / v, 3),
                "source": source,
                "batch": a.batch,
                "repeats": repeats,
                "load_avg": round(load, 2),
                "machine": finish(info),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
