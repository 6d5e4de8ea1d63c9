#!/usr/bin/env python
"""Fine-tune or linear-probe a ViT on labelled chest X-rays (GEN-SSL recipe).

    accelerate launch scripts/finetune.py --model <mae_or_vit_folder | tiny | vit-s16 | vit-b16> \
        --dataset <dataset folder | hub id | phantom> --output_dir runs/ft [--label_fraction 0.1] [--recipe tiny]

The logic lives in ``genssl_hf.training.finetune`` (``python -m genssl_hf.training.finetune``); with
``--push_to_hub`` this script publishes ``best/`` through ``genssl_hf.hub`` once training has finished.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from genssl_hf.hub.publish import publish_after_training  # noqa: E402
from genssl_hf.training.finetune import main  # noqa: E402

if __name__ == "__main__":
    main(publish=publish_after_training)
