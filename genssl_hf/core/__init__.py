"""The ground floor: what every layer of genssl_hf may import and what imports nothing of the package.

``cards`` renders artifact cards from the templates in ``model_cards/``; ``classification_metrics``
holds the stateless scores (AUC, decision rates, bootstrap CIs) that model selection in ``training``
and reporting in ``evaluation`` must compute identically. Atomic files, JSON and hashing live in
``genssl_hf.utils`` (the same floor).
"""

__version__ = "0.1.0"
