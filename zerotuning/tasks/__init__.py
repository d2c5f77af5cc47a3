"""Tasks: data model, loading (built-in, local file, hub), splits and prompt templates."""

from .builtin import builtin_task_names
from .columns import ANSWER_FORMATS, ColumnMapping
from .loader import TaskRequest, load_task
from .prompts import ANSWER_CUE, default_instruction, draw_demonstrations, render_messages, render_prompt
from .splits import SplitPlan
from .task import CLASSIFICATION, GENERATION, MULTIPLE_CHOICE, SPLITS, TASK_KINDS, Example, Task, TaskSpec

__all__ = [
    "ANSWER_CUE",
    "ANSWER_FORMATS",
    "CLASSIFICATION",
    "GENERATION",
    "MULTIPLE_CHOICE",
    "SPLITS",
    "TASK_KINDS",
    "ColumnMapping",
    "Example",
    "SplitPlan",
    "Task",
    "TaskRequest",
    "TaskSpec",
    "builtin_task_names",
    "default_instruction",
    "draw_demonstrations",
    "load_task",
    "render_messages",
    "render_prompt",
]
