"""Scoring through a running vLLM engine (``zerotuning tune --engine vllm``).

The engine starts once per run from a ``zerotuning export`` folder of the loaded model, with an
all-ones profile and the worker extension, so that each candidate profile is swapped in
(``swap_profile``, which also empties the prefix cache) instead of reloading the model.

Each example is one request: its prompt token ids (the same ids the transformers scorer feeds,
BOS first) and one greedy step that returns the log-probability of every vocabulary token
(``logprobs=-1``). From that full next-token distribution ``VllmScorer`` builds the same
``ScoredSplit`` as ``zerotuning.scoring.Scorer``, with one difference of representation:
``answer_logits`` holds each answer's log-mass (log-probabilities, not logits) and
``vocab_logsumexp`` zeros. Their difference, the answer distribution and every metric are the
same quantities; only a per-row constant is gone. The prompts' shared prefix (instruction,
demonstrations) is computed once per profile through vLLM's prefix cache.

Only answer-position scoring is served (no whole-answer scoring, no gradients: vLLM runs no
backward); the CLI refuses the rest before loading anything (``zerotuning.cli_checks``).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..export import EXPORT_RECORD_FILE, export_model
from ..models import load_record
from ..profile import ModelIdentity, Profile
from ..scoring.answer_tokens import FULL_SEQUENCE, AnswerTokens
from ..scoring.cost import CostLedger
from ..scoring.encoding import ScoringSet
from ..scoring.records import ScoredSplit
from ..tuning.candidates import profile_key
from . import WORKER_EXTENSION, swap_profile

ENGINE_VLLM = "vllm"
ENGINE_TRANSFORMERS = "transformers"
ENGINES = (ENGINE_TRANSFORMERS, ENGINE_VLLM)


@dataclass(frozen=True)
class VllmOptions:
    """What the user chose for the engine (``--tensor-parallel-size``, ``--vllm-model``)."""

    tensor_parallel_size: int = 1
    model_folder: Path | None = None  # an existing export of the loaded model; None: export to a temporary folder


def check_export_matches(folder: Path, model) -> None:
    """Refuse a ``--vllm-model`` folder that is not an export of the loaded model (identity, fingerprint, source, dtype)."""
    record_path = folder / EXPORT_RECORD_FILE
    if not record_path.is_file():
        raise ValueError(f"--vllm-model: {str(folder)!r} has no {EXPORT_RECORD_FILE}; expected a folder written by `zerotuning export`")
    record = json.loads(record_path.read_text())
    identity = Profile.neutral(model).identity.to_json()
    loaded = load_record(model)
    checks = (
        ("identity (shape and configuration fingerprint)", record.get("identity"), identity),
        ("source", _source_key(record.get("load_record", {}).get("source")), _source_key(loaded["source"])),
        ("dtype", record.get("load_record", {}).get("dtype"), loaded["dtype"]),
    )
    for what, found, expected in checks:
        if found != expected:
            raise ValueError(f"--vllm-model: {str(folder)!r} is an export of another model: its {what} is {found!r}, the loaded model's is {expected!r}")


def _source_key(source):
    """A built-in model is the same model from any environment's copy of its package: its folder is left out."""
    if isinstance(source, dict) and source.get("kind") == "builtin":
        return {key: value for key, value in source.items() if key != "location"}
    return source


class VllmEngine:
    """One running ``vllm.LLM`` serving the loaded model, whose profile is swapped per candidate."""

    def __init__(self, model, tokenizer, options: VllmOptions, max_prompt_tokens: int) -> None:
        from vllm import LLM

        self._scratch = Path(tempfile.mkdtemp(prefix="zerotuning-vllm-"))
        try:
            if options.model_folder is None:
                folder = export_model(model, tokenizer, self._scratch / "model")
            else:
                folder = Path(options.model_folder)
                check_export_matches(folder, model)
            neutral = Profile.neutral(model)
            neutral.save(self._scratch / "neutral_profile.json")
            dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
            self.settings = {
                "engine": ENGINE_VLLM,
                "model_folder": None if options.model_folder is None else str(folder),
                "tensor_parallel_size": options.tensor_parallel_size,
                "dtype": dtype,
                "max_model_len": max_prompt_tokens + 1,
                "enable_prefix_caching": True,
                "enforce_eager": True,
                "max_num_seqs": 16,
                "seed": 0,
            }
            engine_arguments = {key: value for key, value in self.settings.items() if key not in ("engine", "model_folder")}
            try:
                self.llm = LLM(
                    str(folder), **engine_arguments, max_logprobs=-1,
                    additional_config={"zerotuning_profile": str(self._scratch / "neutral_profile.json")},
                    worker_extension_cls=WORKER_EXTENSION,
                )
            except Exception as error:
                raise RuntimeError(f"--engine vllm: vLLM could not start ({type(error).__name__}: {error})") from error
            import vllm

            self.settings["vllm_version"] = vllm.__version__
            self.settings["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
            self.vocab_size = self.llm.llm_engine.model_config.get_vocab_size()
            self._served = profile_key(neutral)
            self._identity: ModelIdentity = neutral.identity
        except BaseException:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise

    def serve(self, profile: Profile) -> None:
        """Swap ``profile`` in, unless it is the one served (a swap empties the prefix cache)."""
        key = profile_key(profile)
        if key != self._served:
            swap_profile(self.llm, profile)
            self._served = key

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            del self.llm
            gc.collect()
        shutil.rmtree(self._scratch, ignore_errors=True)


class VllmScorer:
    """The answer-position scorer of ``zerotuning.scoring.Scorer``, read from the engine's served profile."""

    rows_per_example = 1

    def __init__(self, engine: VllmEngine, tokenizer, answer_tokens: AnswerTokens, *, ledger: CostLedger) -> None:
        if answer_tokens.mode == FULL_SEQUENCE:
            raise ValueError("--engine vllm: scores the answer position only; --answer-forms full_sequence (or auto resolving to it) is not supported")
        self.engine = engine
        self.tokenizer = tokenizer
        self.answer_tokens = answer_tokens
        self.ledger = ledger
        self._forms = [np.array(sorted(set(forms)), dtype=np.int64) for forms in answer_tokens.forms]
        self._parsed: dict[int, int] = {}

    def score(self, scoring_set: ScoringSet, description: str) -> ScoredSplit:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=-1, flat_logprobs=True, detokenize=False)
        prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in scoring_set.token_ids]
        progress = functools.partial(tqdm, desc=description, unit="example", leave=False)
        outputs = self.engine.llm.generate(prompts, params, use_tqdm=progress)
        tokens = int(scoring_set.lengths().sum())
        self.ledger.record_forward(len(prompts), tokens, tokens)  # one engine call; vLLM schedules its own steps
        count = len(prompts)
        answer_logits = np.empty((count, len(self._forms)), dtype=np.float32)
        entropy = np.empty(count, dtype=np.float64)
        greedy = np.empty(count, dtype=np.int64)
        for index, output in enumerate(outputs):
            log_probs = self._full_distribution(output.outputs[0].logprobs, scoring_set.example_ids[index])
            for answer, forms in enumerate(self._forms):
                picked = log_probs[forms]
                top = picked.max()
                answer_logits[index, answer] = top + np.log(np.exp(picked - top).sum())
            probs = np.exp(log_probs)
            entropy[index] = float(-(probs * np.where(probs > 0, log_probs, 0.0)).sum())  # 0 log 0 = 0
            greedy[index] = int(log_probs.argmax())
        return ScoredSplit(
            example_ids=scoring_set.example_ids,
            answers=scoring_set.answers,
            choice_mask=np.arange(len(self._forms))[None, :] < scoring_set.choice_counts[:, None],
            answer_logits=answer_logits,
            vocab_logsumexp=np.zeros(count, dtype=np.float64),
            vocab_entropy=entropy,
            greedy_tokens=greedy,
            greedy_answers=self._greedy_answers(greedy, scoring_set.choice_counts),
        )

    def _full_distribution(self, flat, example_id: str) -> np.ndarray:
        """[V] float64 log-probabilities of the one generated position (vLLM returns every token, by rank)."""
        start, end = flat.start_indices[0], flat.end_indices[0]
        log_probs = np.full(self.engine.vocab_size, np.nan)
        log_probs[np.asarray(flat.token_ids[start:end], dtype=np.int64)] = flat.logprobs[start:end]
        if np.isnan(log_probs).any():
            raise RuntimeError(f"--engine vllm: example {example_id!r}: vLLM returned {end - start} log-probabilities, not all {self.engine.vocab_size} tokens")
        return log_probs

    def _greedy_answers(self, greedy: np.ndarray, choice_counts: np.ndarray) -> np.ndarray:
        """As ``Scorer``: the greedy token parsed as an answer; naming an option the example lacks is invalid too."""
        for token in set(greedy.tolist()) - self._parsed.keys():
            self._parsed[token] = self.answer_tokens.parse(self.tokenizer.decode([token]))
        parsed = np.array([self._parsed[token] for token in greedy.tolist()], dtype=np.int64)
        return np.where(parsed < choice_counts, parsed, -1)
