#!/usr/bin/env python
"""Save the image tower of a dual-encoder folder as a ViT folder (for --model of scripts/finetune.py:
linear probe or fine-tuning of the image tower alone).

    python scripts/export_image_tower.py runs/vlp runs/vlp-image-tower
    python scripts/finetune.py --model runs/vlp-image-tower --mode linear_probe --dataset phantom \\
        --output_dir runs/probe
"""

import sys

from genssl_hf.training.vlp import export_image_tower

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(export_image_tower(sys.argv[1], sys.argv[2]))
