#!/usr/bin/env python
"""Train the CXR autoencoder (stage 1 of the latent diffusion generator).

    accelerate launch scripts/train_autoencoder.py --dataset phantom:4000 --resolution 64 \
        --max_steps 1500 --output_dir runs/phantom-ae

Also: ``python scripts/train_autoencoder.py ...`` or ``python -m genssl_hf.training.generator autoencoder ...``.
Logic: :func:`genssl_hf.training.generator.train_autoencoder`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from genssl_hf.training.generator import autoencoder_main

if __name__ == "__main__":
    autoencoder_main()
