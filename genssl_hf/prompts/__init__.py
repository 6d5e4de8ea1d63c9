"""genssl_hf.prompts: the paper's three prompt strategies as versioned prompt sets.

>>> from genssl_hf.prompts import PromptSet
>>> PromptSet.from_pretrained("heuristic").texts[:2]
['Small left-sided atelectasis', 'Small right-sided atelectasis']
"""

from genssl_hf.utils import lazy_exports

# Imported from their submodule on first use (PEP 562): ``import genssl_hf.prompts`` and
# ``from genssl_hf.prompts import PromptSet`` stay light (the builders need numpy and the data schema).
_EXPORTS = {
    name: module
    for module, names in {
        "builders": (
            "DEFAULT_THRESHOLD",
            "DISEASES",
            "SIDES",
            "SIZES",
            "build_disease_prompts",
            "build_elaborated_prompts",
            "build_heuristic_prompts",
            "load_candidates",
        ),
        "llm": ("OpenAIFeatureLLM", "TransformersFeatureLLM", "dedupe_features", "parse_features"),
        "promptset": ("SHIPPED_SETS", "Prompt", "PromptSet", "class_label_for"),
        "scoring": ("FeatureScores", "score_features"),
    }.items()
    for name in names
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "Prompt",
    "PromptSet",
    "SHIPPED_SETS",
    "class_label_for",
    "DISEASES",
    "SIZES",
    "SIDES",
    "DEFAULT_THRESHOLD",
    "build_disease_prompts",
    "build_heuristic_prompts",
    "build_elaborated_prompts",
    "load_candidates",
    "score_features",
    "FeatureScores",
    "TransformersFeatureLLM",
    "OpenAIFeatureLLM",
    "parse_features",
    "dedupe_features",
]
