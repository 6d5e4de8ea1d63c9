#!/usr/bin/env python
"""Evaluate a report generator (greedy and beam search) against the constant-report and
nearest-neighbour baselines: BLEU-1..4, ROUGE-L, METEOR (when WordNet is installed) and clinical
efficacy P/R/F1 from the package's CheXpert labeller.

    python scripts/evaluate_report_generator.py --model runs/reportgen --dataset phantom:2000 \\
        --output_dir runs/reportgen/eval
"""

from genssl_hf.evaluation.report_generation import main

if __name__ == "__main__":
    main()
