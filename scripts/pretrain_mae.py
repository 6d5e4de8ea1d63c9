#!/usr/bin/env python
"""GEN-SSL MAE pre-training: thin front over ``genssl_hf.training.mae`` (see ``--help``); with
``--push_to_hub`` it publishes the finished encoder through ``genssl_hf.hub`` (validation, card, leak guard).

    accelerate launch scripts/pretrain_mae.py --model vit-s16 --dataset DATA_DIR --output_dir OUT \
        --reference_stats stats.json --adain on --gradient_accumulation_steps 8
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from genssl_hf.hub.publish import publish_after_training  # noqa: E402
from genssl_hf.training.mae import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(publish=publish_after_training))
