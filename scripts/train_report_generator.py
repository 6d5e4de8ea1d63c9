#!/usr/bin/env python
"""Train a chest X-ray report generator (VisionEncoderDecoderModel) on image-report pairs.

    accelerate launch scripts/train_report_generator.py --model outputs/demo/mae_genssl/model \
        --dataset phantom:2000 --output_dir runs/reportgen
    python scripts/evaluate_report_generator.py --model runs/reportgen --dataset phantom:2000

Options: ``python scripts/train_report_generator.py --help`` (genssl_hf.training.report_generator).
"""

from genssl_hf.hub.publish import publish_after_training
from genssl_hf.training.report_generator import main

if __name__ == "__main__":
    main(publish=publish_after_training)
