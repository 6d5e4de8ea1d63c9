"""genssl_hf.prompts: the paper's three prompt strategies as versioned prompt sets.

>>> from genssl_hf.prompts import PromptSet
>>> PromptSet.from_pretrained("heuristic").texts[:2]
['Small left-sided atelectasis', 'Small right-sided atelectasis']
"""

from .builders import (
    DEFAULT_THRESHOLD,
    DISEASES,
    SIDES,
    SIZES,
    build_disease_prompts,
    build_elaborated_prompts,
    build_heuristic_prompts,
    load_candidates,
)
from .llm import OpenAIFeatureLLM, TransformersFeatureLLM, dedupe_features, parse_features
from .promptset import SHIPPED_SETS, Prompt, PromptSet, class_label_for
from .scoring import FeatureScores, score_features

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
