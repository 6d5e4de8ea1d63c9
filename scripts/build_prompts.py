#!/usr/bin/env python
"""Build a GEN-SSL prompt set (disease / heuristic / elaborated) and save it with its card.

    python scripts/build_prompts.py --strategy elaborated --reports <reports> --output_dir <dir>

Thin front over ``genssl_hf.prompts.build.main`` (also ``python -m genssl_hf.prompts.build``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from genssl_hf.prompts.build import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
