"""Hand-written sources of zerotuning's built-in tasks, read by ``scripts/make_builtin_tasks.py``."""
