#!/usr/bin/env python
"""Generate chest X-rays into a sharded, resumable Hugging Face dataset.

    accelerate launch scripts/generate_dataset.py --pipeline <pipeline dir | phantom> \
        --prompts elaborated --num_images 300000 --output_dir outputs/gen300k [--push_to_hub me/genssl-300k]

Thin front over :func:`genssl_hf.generation.materialize.main` (also runnable as
``python -m genssl_hf.generation.materialize``); see that module for the options' meaning.
"""

import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genssl_hf.generation.materialize import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
