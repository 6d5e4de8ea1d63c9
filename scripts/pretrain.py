#!/usr/bin/env python
"""Self-supervised pre-training, every method: a front for ``genssl pretrain`` (see its ``--help``).

accelerate launch scripts/pretrain.py --method {mae,simclr,moco_v2,simsiam,rotation,byol,convirt,clip} ...
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv=None) -> int:
    from genssl_hf.cli import main as genssl

    return genssl(["pretrain", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
