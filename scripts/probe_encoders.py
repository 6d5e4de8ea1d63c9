#!/usr/bin/env python
"""Frozen-feature quality of encoders: weighted kNN and a logistic-regression linear probe at
fine-tuning's label fractions (issue 21: is an encoder's representation any good before fine-tuning?).

    python scripts/probe_encoders.py --dataset phantom --output_dir results/frozen \
        --model random=tiny --model genssl=runs/mae/model --model genssl_no_adain=runs/mae/model:none \
        --fractions 0.01 0.1 1 --seeds 0 1 2

``--model TITLE=MODEL[:PROCESSOR]``: MODEL is a ViT / ViTMAE / classifier folder or a preset for
seeded random weights; PROCESSOR is ``init`` (default), ``none`` or a folder with a
``preprocessor_config.json``. Writes ``frozen_features.json`` and ``frozen_features.md``.
The logic lives in ``genssl_hf.evaluation.frozen_features`` (command line: ``frozen_features_cli``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from genssl_hf.evaluation.frozen_features_cli import main  # noqa: E402

if __name__ == "__main__":
    main()
