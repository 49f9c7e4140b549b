"""Tokenise every response of every list exactly once (prompt + response together).

How a (prompt, response) becomes one token sequence is `rankrm.inputs` (the input format: text pair
for encoders, `prompt + data.prompt_joiner + response` for decoders, the chat template for messages).

Over-long sequences (> `max_length` tokens): `overlong="filter"` drops the whole list (as TRL
does); `"truncate"` removes prompt tokens first, from `truncation_side` ("left" keeps the end
of the dialogue, next to the reply), and only when the prompt is gone cuts the response from its
end. Special and chat-template tokens after the reply are never removed, and a response keeps
at least one token (else the list is filtered). Truncation needs a fast tokenizer (offsets).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from rankrm.data.records import RankedList
from rankrm.errors import RankrmError
from rankrm.inputs import DEFAULT_FORMAT, InputFormat, Job, make_job

log = logging.getLogger(__name__)
PROMPT, RESPONSE, KEEP = 0, 1, -1  # token roles for truncation; KEEP = special / template tail


@dataclass
class EncodedList:
    """One list, tokenised: K sequences of token ids (prompt + response each) and the labels."""

    ids: list[list[int]]
    type_ids: list[list[int]] | None
    labels: tuple[float, ...]
    source: str = ""

    @property
    def k(self) -> int:
        return len(self.ids)

    @property
    def max_len(self) -> int:
        return max(len(x) for x in self.ids)

    @property
    def n_tokens(self) -> int:
        return sum(len(x) for x in self.ids)


def token_roles(enc: Any, job: Job) -> list[int]:
    """PROMPT / RESPONSE / KEEP per token of a fast tokenizer's encoding (`tokenizers.Encoding`) of `job`."""
    seq = enc.sequence_ids
    if job.spans is None:
        last = 1 if job.b is not None else 0  # the response is the pair's 2nd text, or the only one
        return [KEEP if s is None else (RESPONSE if s == last else PROMPT) for s in seq]
    p_end, r_end = job.spans
    offs = enc.offsets
    return [
        KEEP if s is None else PROMPT if o[0] < p_end else RESPONSE if o[0] < r_end else KEEP for s, o in zip(seq, offs)
    ]


def truncate(roles: list[int], max_length: int, side: str) -> list[int] | None:
    """Indices of the tokens to keep: prompt tokens go first (from `side`), then the response's
    end; None if even one response token plus the kept tokens exceed `max_length`."""
    excess = len(roles) - max_length
    prompt = [i for i, r in enumerate(roles) if r == PROMPT]
    resp = [i for i, r in enumerate(roles) if r == RESPONSE]
    n_p = min(excess, len(prompt))
    drop = set(prompt[:n_p] if side == "left" else prompt[len(prompt) - n_p :])
    excess -= n_p
    if excess >= len(resp):
        return None
    if excess > 0:
        drop.update(resp[len(resp) - excess :])
    return [i for i in range(len(roles)) if i not in drop]


def effective_max_length(tokenizer: Any, max_length: int | None) -> int | None:
    """`max_length`, capped at the tokenizer's `model_max_length` when that is a real limit."""
    limit = getattr(tokenizer, "model_max_length", None)
    limit = limit if isinstance(limit, int) and limit < 1_000_000 else None
    if max_length is None or (limit is not None and max_length > limit):
        if max_length is not None:
            log.warning(
                "data.max_length=%d exceeds the tokenizer's model_max_length %d; using %d", max_length, limit, limit
            )
        return limit
    return max_length


def _backend(tokenizer: Any) -> Any:
    """The Rust tokenizer, set as the transformers call sets it (no truncation or padding, its special-token
    splitting), when that call is a plain pass-through to it; None otherwise (slow or overriding tokenizers)."""
    from transformers.tokenization_utils_base import PaddingStrategy, TruncationStrategy
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    if getattr(type(tokenizer), "_encode_plus", None) is not TokenizersBackend._encode_plus:
        return None
    tokenizer.set_truncation_and_padding(
        PaddingStrategy.DO_NOT_PAD, TruncationStrategy.DO_NOT_TRUNCATE, None, 0, None, None
    )
    backend = tokenizer.backend_tokenizer
    backend.encode_special_tokens = tokenizer.split_special_tokens
    return backend


def _fast_call(backend: Any, jobs: list[Job], offsets: bool) -> list[Any]:
    """The Rust tokenizer on jobs of one kind; `encode_batch_fast` (no offsets) unless truncation needs them."""
    a = [j.a for j in jobs]
    encode = backend.encode_batch if offsets else backend.encode_batch_fast
    return encode(a if jobs[0].b is None else list(zip(a, [j.b for j in jobs])), add_special_tokens=jobs[0].specials)


def _run(tokenizer: Any, jobs: list[Job], want_offsets: bool) -> tuple[list[list[int]], Any, Any]:
    """One batched tokenizer call for jobs of one kind (same pairing and special-token use):
    (ids per job, type ids per job or None, the fast tokenizer's encodings, None if it is slow).

    A fast tokenizer is called on its Rust core directly, as `tokenizer(a, b)` does, minus the
    conversion of every encoding into Python lists it would do (a quarter of its time), and without
    offsets unless truncation needs them (`encode_batch_fast`: another fifth)."""
    backend = _backend(tokenizer)
    if backend is None:  # no attention mask: the collator makes it
        a, b = [j.a for j in jobs], ([j.b for j in jobs] if jobs[0].b is not None else None)
        enc = tokenizer(
            a, b, add_special_tokens=jobs[0].specials, return_offsets_mapping=want_offsets, return_attention_mask=False
        )
        return enc["input_ids"], enc.get("token_type_ids"), enc.encodings  # encodings: None if slow
    encs = _fast_call(backend, jobs, want_offsets)
    types = [e.type_ids for e in encs] if "token_type_ids" in tokenizer.model_input_names else None
    return [e.ids for e in encs], types, encs


@dataclass
class Flat:
    """Sequences back to back: token ids (T,), their type ids (T,) or None, and lengths (S,) (T = lens.sum())."""

    ids: np.ndarray
    types: np.ndarray | None
    lens: np.ndarray

    def select(self, keep: np.ndarray) -> Flat:
        """The sequences where `keep` (S,) bool is true."""
        if keep.all():
            return self
        tok = np.repeat(keep, self.lens)  # (T,) bool
        return Flat(self.ids[tok], None if self.types is None else self.types[tok], self.lens[keep])


def encode_fast(tokenizer: Any, jobs: list[Job]) -> list[Any] | None:
    """Jobs of one kind, untruncated, through the Rust tokenizer alone (no Python object per token: the call
    holds no GIL); `flatten` makes its encodings the same tokens as `tokenize_jobs`. None where that path is
    needed (kinds mixed, no plain fast tokenizer)."""
    backend = _backend(tokenizer)
    if backend is None or not jobs or len({(j.b is not None, j.specials) for j in jobs}) > 1:
        return None
    return _fast_call(backend, jobs, offsets=False)


def flatten(tokenizer: Any, encs: list[Any], dtype: np.dtype) -> Flat:
    """`encode_fast`'s encodings as flat arrays (what the token cache stores)."""
    lens = np.fromiter(map(len, encs), np.int64, count=len(encs))  # (S,)
    n = int(lens.sum())
    ids = np.fromiter(chain.from_iterable(e.ids for e in encs), dtype, count=n)  # (T,)
    types = None
    if "token_type_ids" in tokenizer.model_input_names:
        types = np.fromiter(chain.from_iterable(e.type_ids for e in encs), np.uint8, count=n)  # (T,)
    return Flat(ids, types, lens)


def tokenize_jobs(
    tokenizer: Any, jobs: list[Job], max_length: int | None, side: str, chunk: int = 2048
) -> list[tuple[list[int], list[int] | None, bool] | None]:
    """(ids, type_ids, truncated) per job, None if it cannot fit; each text is tokenised once."""
    out: list[Any] = [None] * len(jobs)
    kinds: dict[tuple[bool, bool], list[int]] = {}
    for n, j in enumerate(jobs):
        kinds.setdefault((j.b is not None, j.specials), []).append(n)
    for idx in kinds.values():
        for s in range(0, len(idx), chunk):
            part = idx[s : s + chunk]
            pj = [jobs[n] for n in part]
            all_ids, tt, encs = _run(tokenizer, pj, want_offsets=max_length is not None and any(j.spans for j in pj))
            for i, n in enumerate(part):
                ids, types, cut = all_ids[i], (tt[i] if tt is not None else None), False
                if max_length is not None and len(ids) > max_length:
                    keep = truncate(token_roles(encs[i], jobs[n]), max_length, side)
                    if keep is None:
                        continue
                    ids, types, cut = (
                        [ids[t] for t in keep],
                        (None if types is None else [types[t] for t in keep]),
                        True,
                    )
                out[n] = (ids, types, cut)
    return out


Result = tuple["EncodedList | None", int]  # a list's encoding (None: filtered as overlong) and its cut responses


def assemble(
    lists: list[RankedList], results: list[tuple[list[int], list[int] | None, bool] | None], max_length: int | None
) -> list[Result]:
    """Per list of `lists`, from `tokenize_jobs`' results of its responses (in order): its `EncodedList`,
    or None when a response is longer than `max_length` (or could not be truncated to it)."""
    out: list[Result] = []
    pos = 0
    for rl in lists:
        res, pos = results[pos : pos + rl.k], pos + rl.k
        too_long = max_length is not None and any(r is None or len(r[0]) > max_length for r in res)
        if too_long or any(r is None for r in res):
            out.append((None, 0))
            continue
        types = [r[1] for r in res] if res[0][1] is not None else None  # type: ignore[index]
        out.append((EncodedList([r[0] for r in res], types, rl.labels, rl.source), sum(r[2] for r in res)))  # type: ignore[index,misc]
    return out


def encode_lists(
    tokenizer: Any,
    lists: list[RankedList],
    max_length: int | None,
    overlong: str = "filter",
    truncation_side: str = "left",
    fmt: InputFormat = DEFAULT_FORMAT,
) -> tuple[list[EncodedList], dict[str, int]]:
    """Tokenise all lists (each response once). Returns the kept lists and counts:
    `overlong_filtered` (lists dropped), `truncated_lists`, `truncated_responses`. `overlong` is filter or
    truncate, `truncation_side` left or right (the config's values are checked by its schema, rankrm.config)."""
    if overlong == "truncate" and max_length is not None and not getattr(tokenizer, "is_fast", False):
        raise RankrmError("data.overlong=truncate needs a fast tokenizer (offsets); use overlong=filter")
    jobs = [make_job(tokenizer, rl, r, fmt) for rl in lists for r in rl.responses]
    limit = max_length if overlong == "truncate" else None
    results = tokenize_jobs(tokenizer, jobs, limit, truncation_side)
    counts: Counter[str] = Counter(overlong_filtered=0, truncated_lists=0, truncated_responses=0)
    out = []
    for enc, n_cut in assemble(lists, results, max_length):
        if enc is None:
            counts["overlong_filtered"] += 1
            continue
        counts["truncated_responses"] += n_cut
        counts["truncated_lists"] += n_cut > 0
        out.append(enc)
    return out, dict(counts)
