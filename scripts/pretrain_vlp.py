#!/usr/bin/env python
"""Image-report contrastive pre-training (ConVIRT / CLIP) -> VisionTextDualEncoderModel.

    accelerate launch scripts/pretrain_vlp.py --pairs phantom:2000 --output_dir runs/vlp
    accelerate launch scripts/pretrain_vlp.py --pairs generated:outputs/gen-iu --reports iu:NLMCXR_reports.tgz \
        --section findings --loss convirt --output_dir runs/vlp-iu
See ``python scripts/pretrain_vlp.py --help`` and genssl_hf/training/vlp.py.
"""

import sys

from genssl_hf.hub.publish import publish_after_training
from genssl_hf.training.vlp import main

if __name__ == "__main__":
    sys.exit(main(publish=publish_after_training))
