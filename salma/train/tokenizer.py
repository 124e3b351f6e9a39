"""The synthetic tokenizer of the kit's models: a word-level tokenizer over every word the SynRef generator
can emit. Models built from a config (random weights) use it; models loaded from a folder read their own.
"""

from __future__ import annotations

from salma.data.synref_words import vocabulary
from salma.mllm import build_synthetic_tokenizer


def synthetic_tokenizer():
    """A fresh word-level tokenizer over SynRef's words (``transformers`` fast tokenizer)."""
    return build_synthetic_tokenizer(vocabulary())
