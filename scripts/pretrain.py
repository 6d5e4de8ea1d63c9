#!/usr/bin/env python
"""Self-supervised pre-training, one front for every method:

    accelerate launch scripts/pretrain.py --method {mae,simclr,moco_v2,simsiam,rotation} ...

``--method mae`` runs the MAE trainer (``genssl_hf.training.mae``, same options as
``scripts/pretrain_mae.py``); the other methods run ``genssl_hf.training.ssl.pretrain`` (``--help``
after ``--method X`` lists their options, e.g. ``--backbone resnet-18`` or ``vit-s16``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

SSL_METHODS = ("simclr", "moco_v2", "simsiam", "rotation")


def main(argv=None) -> int:
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method", choices=("mae",) + SSL_METHODS)
    known, rest = pre.parse_known_args(argv)
    if known.method is None:
        pre.print_usage(sys.stderr)
        print("pretrain.py: error: --method is required (mae, simclr, moco_v2, simsiam or rotation)", file=sys.stderr)
        return 2
    from genssl_hf.hub.publish import publish_after_training  # --push_to_hub: publish once trained

    if known.method == "mae":
        from genssl_hf.training.mae import main as mae_main

        return mae_main(rest, publish=publish_after_training)
    from genssl_hf.training.ssl.pretrain import main as ssl_main

    return ssl_main(argv, publish=publish_after_training)


if __name__ == "__main__":
    sys.exit(main())
