"""``genssl pretrain --method M``: one entry for every pre-training method.

``mae`` runs the MAE trainer (:mod:`genssl_hf.training.mae`), a registered contrastive / Siamese /
pretext method the shared SSL recipe (:mod:`genssl_hf.training.ssl.pretrain`), ``convirt`` / ``clip``
vision-language pre-training on image-report pairs (:mod:`genssl_hf.training.vlp`, its ``--loss``).
``--help`` after ``--method M`` lists that method's options.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from genssl_hf.cli.commands import VLP_METHODS

__all__ = ["method_names", "main", "export_image_tower_main"]


def method_names() -> list[str]:
    from genssl_hf.training.ssl.methods import METHODS

    return ["mae", *METHODS, *VLP_METHODS]


def main(argv: Sequence[str] | None = None, publish=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = method_names()
    pre = argparse.ArgumentParser(
        prog="genssl pretrain",
        add_help=False,
        description="Pre-train an encoder; --help after --method M lists its options.",
    )
    pre.add_argument("--method", choices=names)
    known, rest = pre.parse_known_args(argv)
    if known.method is None:
        pre.print_usage(sys.stderr)
        print(f"genssl pretrain: error: --method is required (one of {', '.join(names)})", file=sys.stderr)
        return 0 if any(a in ("-h", "--help") for a in argv) else 2
    if known.method == "mae":
        from genssl_hf.training.mae import main as mae_main

        return mae_main(rest, publish=publish)
    if known.method in VLP_METHODS:
        if any(a == "--loss" or a.startswith("--loss=") for a in rest):
            print(f"genssl pretrain: error: --method {known.method} sets the VLP loss; drop --loss", file=sys.stderr)
            return 2
        from genssl_hf.training.vlp import main as vlp_main

        return vlp_main(["--loss", known.method, *rest], publish=publish)
    from genssl_hf.training.ssl.pretrain import main as ssl_main

    return ssl_main(argv, publish=publish)


def export_image_tower_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="genssl export-image-tower",
        description="Save the image tower of a dual-encoder folder as a ViT folder "
        "(for genssl finetune --model FOLDER).",
    )
    p.add_argument("dual_encoder_dir")
    p.add_argument("output_dir")
    args = p.parse_args(argv)
    from genssl_hf.training.vlp import export_image_tower

    print(export_image_tower(args.dual_encoder_dir, args.output_dir))
    return 0
