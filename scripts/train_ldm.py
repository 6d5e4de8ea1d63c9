#!/usr/bin/env python
"""Train the text-conditioned latent diffusion UNet (stage 2) and write a pipeline folder.

    accelerate launch scripts/train_ldm.py --dataset phantom:4000 --resolution 64 \
        --autoencoder runs/phantom-ae --max_steps 3000 --output_dir runs/phantom-ldm

Also: ``python scripts/train_ldm.py ...`` or ``python -m genssl_hf.training.generator ldm ...``.
Logic: :func:`genssl_hf.training.generator.train_ldm`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from genssl_hf.training.generator import ldm_main

if __name__ == "__main__":
    ldm_main()
