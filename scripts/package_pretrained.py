#!/usr/bin/env python
"""Package the weights shipped inside genssl_hf from a run of the ``nih-shipped`` preset.

    python scripts/run_pipeline.py --preset genssl_hf/pipeline/presets/nih-shipped.json --output_dir outputs/nih-shipped
    python scripts/package_pretrained.py --run outputs/nih-shipped --real_data ../shared/data

Writes ``genssl_hf/generation/pretrained/nih-ldm-64`` and ``genssl_hf/training/pretrained/nih-genssl-mae-64``
(loadable as ``genssl_hf/nih-ldm-64`` / ``genssl_hf/nih-genssl-mae-64``), each measured, carded and
checked by the real-data leak guard (see ``genssl_hf.hub.shipped``).
"""

import sys

from genssl_hf.hub.shipped import main

if __name__ == "__main__":
    sys.exit(main())
