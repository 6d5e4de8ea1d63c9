#!/usr/bin/env python
"""Evaluate classifiers and generated images; writes a results folder (metrics JSON, Markdown tables
in the paper's layout, ROC curves, robustness table, attention overlays, FID / similarity).

    python scripts/evaluate.py --model runs/ft/best --dataset phantom --output_dir results/ft --robustness

The logic lives in ``genssl_hf.evaluation.report`` (``python -m genssl_hf.evaluation.report``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from genssl_hf.evaluation.report import main  # noqa: E402

if __name__ == "__main__":
    main()
