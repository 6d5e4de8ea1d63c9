#!/usr/bin/env python
"""Convert a MONAI latent-diffusion bundle (e.g. cxr_image_synthesis_latent_diffusion_model) into a
genssl_hf pipeline folder:

    python scripts/convert_monai_bundle.py --bundle cxr_image_synthesis_latent_diffusion_model \
        --text_encoder stable-diffusion-2-1-base/text_encoder --output_dir pipelines/cxr-ldm-mimic

Logic: :func:`genssl_hf.generation.convert.convert_monai_bundle`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from genssl_hf.generation.convert import main

if __name__ == "__main__":
    main()
