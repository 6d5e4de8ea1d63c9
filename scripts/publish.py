#!/usr/bin/env python
"""Publish a genssl_hf artifact (encoder, classifier, generator, prompt_set, dataset, or all of a
run) to the Hugging Face Hub, private by default; ``--dry_run DIR`` writes exactly the folder that
would be uploaded. Every outgoing file is checked for report text and real pixels first.

    python scripts/publish.py --kind encoder --folder runs/demo/mae --dry_run out/hub/encoder \\
        --real_data ../shared/data
    python scripts/publish.py --kind classifier --folder runs/demo/classifier --repo_id me/genssl-clf \\
        --metrics runs/demo/classifier/metrics.json --real_data ../shared/data

The logic lives in :mod:`genssl_hf.hub.publish` (also ``python -m genssl_hf.hub.publish``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genssl_hf.hub.publish import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
