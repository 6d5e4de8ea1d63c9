#!/usr/bin/env python
"""Run the end-to-end GEN-SSL pipeline: ``python scripts/run_pipeline.py --preset demo``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genssl_hf.pipeline.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
