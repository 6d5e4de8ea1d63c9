"""Card rendering, as seen from the hub layer: the implementation lives on the ground floor
(:mod:`genssl_hf.core.cards`) so that every stage can write its card without importing ``hub``."""

from genssl_hf.core.cards import (  # noqa: F401
    DISCLAIMER,
    TEMPLATE_DIR,
    render_dataset_card,
    render_model_card,
    template_path,
)
