"""Stochastic depth for transformers' ViT: moved to :mod:`genssl_hf.models.drop_path` (the
classifier model, which installs it, lives in ``genssl_hf.models``); re-exported here for old imports."""

from genssl_hf.models.drop_path import BranchDropout, drop_path, drop_path_rates, set_drop_path

__all__ = ["drop_path", "BranchDropout", "set_drop_path", "drop_path_rates"]
