"""``ZeroTuningLM``: lm-eval's own HF model class driving a loaded model with a ZeroTuning profile.

Everything lm-eval does for a ``--model hf`` run (tokenisation, batching, the logits cache,
generation, stop sequences) is HFLM's own code. This subclass adds two things:

* the profile is applied for the duration of each request type (``loglikelihood``,
  ``loglikelihood_rolling``, ``generate_until``) and the model is put back as it was afterwards;
* the sink is the BOS in every row (``sink_inputs.py``, docs/lm_eval.md): the tokenizer is made
  to prepend its BOS (``ensure_bos``, as ``load_model`` does); long contexts and prompts are cut
  after their BOS rather than before it; and rolling documents are windowed with the BOS first
  in every window, once (lm-eval would prepend its prefix token to a document the tokenizer
  already starts with the BOS, and start later windows mid-document).

``sink_rows()`` counts, per request type, the rows fed to the model and those whose first token
is not the BOS (only possible when the tokenizer has none, or a task's own text hides it).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

import torch
from lm_eval.models.huggingface import HFLM

from ..hf import applied
from ..models import ensure_bos
from ..profile import ModelIdentity, Profile
from . import sink_inputs

logger = logging.getLogger(__name__)

# HFLM options that make sense for a model that is already loaded; the others load or wrap a
# model (pretrained, peft, dtype, device, ...) or would move the sink (add_bos_token, prefix_token_id).
HFLM_OPTIONS = (
    "max_length",
    "truncation",
    "logits_cache",
    "softmax_dtype",
    "mixed_precision_dtype",
    "think_end_token",
    "enable_thinking",
    "chat_template_args",
)
REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")


class ZeroTuningLM(HFLM):
    """lm-eval's ``HFLM`` on ``model`` (a loaded causal LM) and ``tokenizer``, scored with ``profile`` applied."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        profile: Profile,
        *,
        batch_size: int | str = 1,
        max_batch_size: int = 64,
        **hflm_options: Any,
    ) -> None:
        if not isinstance(profile, Profile):
            raise TypeError(f"profile: expected a zerotuning.Profile, got {type(profile).__name__}")
        unknown = sorted(set(hflm_options) - set(HFLM_OPTIONS))
        if unknown:
            raise ValueError(
                f"ZeroTuningLM: options {unknown} are not taken (the model is already loaded, and the sink is the BOS); "
                f"expected any of {list(HFLM_OPTIONS)}"
            )
        profile.check_matches(ModelIdentity.of(model))
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # as load_model does: batches need a pad token
        self.bos_check = ensure_bos(tokenizer)
        super().__init__(
            pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size, max_batch_size=max_batch_size, **hflm_options
        )
        self.profile = profile
        self._sink_rows = {name: {"rows": 0, "rows_not_starting_with_bos": 0} for name in REQUEST_TYPES}
        self._request_type: str | None = None

    def sink_rows(self) -> dict:
        """Per request type: rows fed to the model, and those whose first token is not the BOS."""
        return {name: dict(counts) for name, counts in self._sink_rows.items()}

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        with self._scoring("loglikelihood"):
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def generate_until(self, requests, disable_tqdm: bool = False):
        with self._scoring("generate_until"):
            return super().generate_until(requests, disable_tqdm=disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        with self._scoring("loglikelihood_rolling"):
            batch_size = self._detect_batch_size() if self.batch_size == "auto" else self.batch_size
            windows, owners = [], []
            for index, request in enumerate(requests):
                for window in sink_inputs.rolling_windows(self._document_tokens(request.args[0]), self.prefix_token_id, self.max_length):
                    windows.append((None, *window))  # key None: lm-eval caches rolling results per document
                    owners.append(index)
            totals = [0.0] * len(requests)
            for start in range(0, len(windows), batch_size):
                batch = windows[start : start + batch_size]
                scores = self._loglikelihood_tokens(batch, disable_tqdm=True, override_bs=len(batch))
                for owner, (log_likelihood, _) in zip(owners[start : start + batch_size], scores):
                    totals[owner] += log_likelihood
            for request, total in zip(requests, totals):
                self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
            return totals

    def _document_tokens(self, text: str) -> list[int]:
        """A rolling document's tokens without a leading BOS: the windows put lm-eval's prefix token (the BOS) first."""
        tokens = self.tok_encode(text, add_special_tokens=False)
        return tokens[1:] if tokens[:1] == [self.prefix_token_id] else tokens

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        sink = self.tokenizer.bos_token_id
        if sink is not None:
            requests = [
                (key, sink_inputs.truncate_context(context, len(continuation), self.max_length, sink), continuation)
                for key, context, continuation in requests
            ]
        self._count_rows(context[0] for _, context, _ in requests)
        return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)

    def tok_batch_encode(self, strings, padding_side: str = "left", left_truncate_len: int | None = None, truncation: bool = False):
        sink = self.tokenizer.bos_token_id
        keep_sink = sink is not None and padding_side == "left"
        input_ids, attention_mask = super().tok_batch_encode(
            strings, padding_side=padding_side, left_truncate_len=None if keep_sink else left_truncate_len, truncation=truncation
        )
        if keep_sink and left_truncate_len and input_ids.shape[1] > left_truncate_len:
            logger.warning("generation prompts of up to %d tokens cut to %d, keeping their BOS", input_ids.shape[1], left_truncate_len)
            input_ids, attention_mask = sink_inputs.truncate_left_padded(
                input_ids, attention_mask, left_truncate_len, sink, self.tokenizer.pad_token_id
            )
        first_real = attention_mask.argmax(dim=1)  # the row's sink, whichever side it is padded on
        self._count_rows(input_ids[torch.arange(len(input_ids)), first_real].tolist())
        return input_ids, attention_mask

    def _count_rows(self, first_tokens) -> None:
        if self._request_type is None:
            return  # a direct call outside the request methods: not part of an evaluation
        counts = self._sink_rows[self._request_type]
        for token in first_tokens:
            counts["rows"] += 1
            counts["rows_not_starting_with_bos"] += token != self.tokenizer.bos_token_id

    @contextlib.contextmanager
    def _scoring(self, request_type: str) -> Iterator[None]:
        self._request_type = request_type
        try:
            with applied(self.model, self.profile):
                yield
        finally:
            self._request_type = None
