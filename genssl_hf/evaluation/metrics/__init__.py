"""Hugging Face `evaluate` metric modules shipped with genssl_hf (load by path: see
genssl_hf.evaluation.METRIC_PATH)."""
