"""The tokenizer calls of `rankrm.data.tokenize`: a fast tokenizer's Rust core called directly (`_run`,
`encode_fast` + `flatten`, what training and the token cache use) gives exactly the tokens of the
transformers call `tokenizer(a, b)`, on random texts with special-token strings, blanks and unicode,
for an encoder (text pairs, type ids), a decoder (joined text, no type ids) and chat-templated text."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from data_fixtures import CountingTokenizer, minilm_tokenizer
from test_data_cache import _decoder_tokenizer

from rankrm.data.tokenize import _backend, encode_fast, flatten, tokenize_jobs
from rankrm.inputs import Job

WORDS = ["the", "reward", "model", "ranks", "answers", "naïve", "日本語", "über", "[SEP]", "<|im_end|>", "a,b", "  "]


def _texts(rng: random.Random, n: int) -> list[str]:
    return [
        "".join(rng.choice([" ", "", "\n"]) + rng.choice(WORDS) for _ in range(rng.randint(0, 30))) for _ in range(n)
    ]


def _jobs(tok: Any, rng: random.Random) -> list[list[Job]]:
    """Job lists of one kind each: text pairs, single texts, single texts without special tokens."""
    a, b = _texts(rng, 40), _texts(rng, 40)
    pairs = [Job(x, y) for x, y in zip(a, b)] if tok.sep_token is not None else []
    return [j for j in (pairs, [Job(x) for x in a], [Job(x, specials=False) for x in b]) if j]


def _reference(tok: Any, jobs: list[Job]) -> tuple[list[list[int]], list[list[int]] | None]:
    b = [j.b for j in jobs] if jobs[0].b is not None else None
    enc = tok([j.a for j in jobs], b, add_special_tokens=jobs[0].specials)
    return enc["input_ids"], enc.get("token_type_ids")


@pytest.mark.parametrize("make", [minilm_tokenizer, _decoder_tokenizer], ids=["encoder", "decoder"])
def test_the_rust_core_gives_the_tokens_of_the_transformers_call(make: Any) -> None:
    tok, rng = make(), random.Random(0)
    assert _backend(tok) is not None  # the direct path is what is under test
    for jobs in _jobs(tok, rng):
        ids, types = _reference(tok, jobs)
        got = tokenize_jobs(tok, jobs, None, "left")
        assert [g[0] for g in got] == ids
        assert [g[1] for g in got] == (types if types is not None else [None] * len(jobs))
        flat = flatten(tok, encode_fast(tok, jobs), np.dtype(np.uint32))
        assert flat.lens.tolist() == [len(x) for x in ids]
        assert flat.ids.tolist() == [t for x in ids for t in x]
        assert (flat.types is None) == (types is None)
        if types is not None:
            assert flat.types.tolist() == [t for x in types for t in x]


def test_a_tokenizer_set_to_truncate_or_pad_is_reset_as_the_transformers_call_resets_it() -> None:
    tok = minilm_tokenizer()
    tok.backend_tokenizer.enable_truncation(3)
    tok.backend_tokenizer.enable_padding(length=64)
    jobs = [Job("a long answer about reward models and rankings", None), Job("short", None)]
    assert [g[0] for g in tokenize_jobs(tok, jobs, None, "left")] == _reference(minilm_tokenizer(), jobs)[0]


def test_mixed_kinds_and_wrapped_tokenizers_take_the_transformers_call() -> None:
    tok = minilm_tokenizer()
    assert encode_fast(tok, [Job("a", "b"), Job("c")]) is None  # pairs and single texts in one call
    wrapped = CountingTokenizer(tok)
    assert _backend(wrapped) is None
    jobs = [Job("a", "b"), Job("c", "d")]
    assert [g[0] for g in tokenize_jobs(wrapped, jobs, None, "left")] == _reference(tok, jobs)[0]
    assert sum(wrapped.seen.values()) == 2
