#!/usr/bin/env python
"""Zero-shot classification (prompt ensembles) and image <-> report retrieval of a dual encoder.

    python scripts/evaluate_vlp.py --model runs/vlp --pairs phantom:500 --output_dir results/vlp
    python scripts/evaluate_vlp.py --model runs/vlp --dataset kermany:../shared/data/kermany-pneumonia-224 \
        --split train --max_samples 1000 --output_dir results/vlp-kermany
"""

from genssl_hf.evaluation.vlp import main

if __name__ == "__main__":
    main()
