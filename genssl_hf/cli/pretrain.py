"""``genssl pretrain --method M``: one entry for every pre-training method.

``mae`` runs the MAE trainer (:mod:`genssl_hf.training.mae`), a registered contrastive / Siamese /
pretext method the shared SSL recipe (:mod:`genssl_hf.training.ssl.pretrain`), ``convirt`` / ``clip``
vision-language pre-training on image-report pairs (:mod:`genssl_hf.training.vlp`, its ``--loss``).
``--help`` after ``--method M`` lists that method's options. A config file given first
(``genssl pretrain recipe.yaml``) names the method with a ``method`` key and is checked against
that method's typed options.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from genssl_hf.cli.commands import VLP_METHODS
from genssl_hf.cli.config_file import is_config_path

__all__ = ["method_names", "main", "export_image_tower_main"]


def method_names() -> list[str]:
    from genssl_hf.training.ssl.methods import METHODS

    return ["mae", *METHODS, *VLP_METHODS]


def _method_parser(method: str):
    if method == "mae":
        from genssl_hf.training.mae import build_parser
    elif method in VLP_METHODS:
        from genssl_hf.training.vlp import build_parser
    else:
        from genssl_hf.training.ssl.pretrain import build_parser
    return build_parser()


def _expand_config_file(argv: list[str]) -> list[str]:
    """``recipe.yaml --seed 1`` -> ``--method M <the file's options, checked by M's parser> --seed 1``
    (the command line wins; a ``method`` key of the file picks the method unless ``--method`` is typed)."""
    from genssl_hf.typed_args import ConfigFileError, checked_config_argv, read_config_file

    path, rest = argv[0], argv[1:]
    options = read_config_file(path)
    typed = argparse.ArgumentParser(add_help=False)
    typed.add_argument("--method")
    recorded = options.get("args") if isinstance(options.get("args"), dict) else {}  # a run's run_config.json
    vlp_loss = recorded.get("loss") if recorded.get("loss") in VLP_METHODS else None  # a VLP run records its loss
    method = typed.parse_known_args(rest)[0].method or options.get("method") or recorded.get("method") or vlp_loss
    options = {k: v for k, v in options.items() if k != "method"}
    if method not in method_names():
        raise ConfigFileError(f"config file {path}: method must be one of {', '.join(method_names())}, got {method!r}")
    if method in VLP_METHODS and recorded:  # a VLP run's recorded loss is its method
        options = {**options, "args": {k: v for k, v in recorded.items() if k != "loss"}}
    # a run config's top-level ``loss`` is the record of the loss settings, not an option
    if method in VLP_METHODS and "loss" in options and not recorded:
        raise ConfigFileError(f"config file {path}: loss: method {method} sets the VLP loss; drop loss")
    file_argv = checked_config_argv(_method_parser(method), options, path)
    return ["--method", method, *file_argv, *rest]


def main(argv: Sequence[str] | None = None, publish=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and is_config_path(argv[0]):
        argv = _expand_config_file(argv)
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
