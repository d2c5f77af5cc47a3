"""Generation tasks: conversations rendered for a tokenizer, reference likelihoods, greedy answers and their measures.

``prepare_generation`` renders and tokenises a generation task once; ``GenerationScorer`` scores a
split with whatever profile is applied (teacher-forced reference log-likelihood in one pass per
batch, and/or greedy generation with the KV cache); ``GenerationScores`` holds the per-example
results and the split measures; ``compare_generation`` is the baseline-vs-profile comparison on
the test split, with intervals and paired tests.
"""

from .formats import CHAT_TEMPLATE_CHOICES
from .prepared import GenerationSet, PreparedGeneration, prepare_generation

__all__ = ["CHAT_TEMPLATE_CHOICES", "GenerationSet", "PreparedGeneration", "prepare_generation"]
