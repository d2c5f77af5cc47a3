"""Scoring a task with a model: answer tokens, batching, per-example records and cost accounting."""

from .answer_tokens import AnswerTokens, answer_tokens
from .cost import CostLedger, StageCost
from .encoding import ScoringSet, left_padded, length_sorted_batches
from .prepared_task import PreparedTask, prepare_task
from .records import ScoredSplit
from .scorer import Scorer, make_scorer
from .sequence_scorer import SequenceScorer
from .sequences import SequencePlan

__all__ = [
    "AnswerTokens",
    "CostLedger",
    "PreparedTask",
    "ScoredSplit",
    "Scorer",
    "SequencePlan",
    "SequenceScorer",
    "ScoringSet",
    "StageCost",
    "answer_tokens",
    "left_padded",
    "length_sorted_batches",
    "make_scorer",
    "prepare_task",
]
