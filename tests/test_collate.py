"""Tokenisation (once per response, prompt+response, truncation policy) and collation (shapes, padding, row-major)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import CountingTokenizer, minilm_tokenizer

from rankrm.data.collate import RankCollator, padding_counts
from rankrm.data.records import RankedList
from rankrm.data.tokenize import EncodedList, encode_lists, truncate

CHAT = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"


@pytest.fixture(scope="module")
def tok():
    return minilm_tokenizer()


def _lists() -> list[RankedList]:
    return [
        RankedList(("great answer here", "ok", "bad bad bad bad answer"), (2.0, 1.0, 0.0), "what is it?"),
        RankedList(("yes", "no"), (1.0, 0.0), None),
        RankedList(("a b c d e f g", "h", "i j", "k l m"), (3.0, 2.0, 2.0, 0.0), "q"),
    ]


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_shapes_padding_and_row_major_order(tok, side: str) -> None:
    enc, _ = encode_lists(tok, _lists(), 64)
    batch = RankCollator(tok.pad_token_id, side)(enc)
    n, t = 3 + 2 + 4, max(len(s) for e in enc for s in e.ids)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape == (n, t)
    assert batch["labels"].shape == batch["mask"].shape == (3, 4) and batch["mask"].sum() == n
    assert batch["labels"].dtype == torch.float32 and batch["mask"].dtype == torch.bool
    assert batch["mask"].tolist() == [[True, True, True, False], [True, True, False, False], [True] * 4]
    assert batch["labels"][2].tolist() == [3.0, 2.0, 2.0, 0.0] and batch["labels"][1, 2:].tolist() == [0.0, 0.0]
    rows = [s for e in enc for s in e.ids]  # row r of input_ids is the r-th unmasked slot, row-major
    for r, seq in enumerate(rows):
        am = batch["attention_mask"][r]
        assert am.sum() == len(seq)
        assert batch["input_ids"][r][am.bool()].tolist() == seq
        assert (batch["input_ids"][r][~am.bool()] == tok.pad_token_id).all()
        real_at_start = bool(am[0])
        assert real_at_start == (side == "right") or len(seq) == t
    # text-pair encoding: prompt tokens have type 0, response tokens type 1; no prompt -> all 0
    assert batch["token_type_ids"][0].max() == 1 and batch["token_type_ids"][3].max() == 0
    # scores scattered back through the mask land on the right (list, slot)
    scores = torch.arange(n, dtype=torch.float32)
    rewards = scores.new_zeros(3, 4).masked_scatter(batch["mask"], scores)
    assert rewards[1, :2].tolist() == [3.0, 4.0] and rewards[2, 3] == 8.0


def test_each_response_is_tokenised_once_with_its_prompt(tok) -> None:
    counting = CountingTokenizer(tok)
    lists = _lists()
    enc, _ = encode_lists(counting, lists, 64)
    expected = {(rl.prompt, r) if rl.prompt else (r, None) for rl in lists for r in rl.responses}
    assert set(counting.seen) == expected and all(v == 1 for v in counting.seen.values())
    assert tok.decode(enc[0].ids[0]) == "[CLS] what is it? [SEP] great answer here [SEP]"


def test_overlong_filter_drops_the_whole_list(tok) -> None:
    lists = [RankedList(("short", "word " * 40), (1.0, 0.0), "p"), RankedList(("a", "b"), (1.0, 0.0), "p")]
    enc, counts = encode_lists(tok, lists, 16, "filter")
    assert len(enc) == 1 and counts == {"overlong_filtered": 1, "truncated_lists": 0, "truncated_responses": 0}


@pytest.mark.parametrize("side,kept", [("left", "ten eleven twelve"), ("right", "one two three")])
def test_truncate_cuts_the_prompt_first(tok, side: str, kept: str) -> None:
    prompt = "one two three four five six seven eight nine ten eleven twelve"
    lists = [RankedList(("good reply", "bad reply"), (1.0, 0.0), prompt)]
    enc, counts = encode_lists(tok, lists, 8, "truncate", side)
    assert counts == {"overlong_filtered": 0, "truncated_lists": 1, "truncated_responses": 2}
    assert tok.decode(enc[0].ids[0]) == f"[CLS] {kept} [SEP] good reply [SEP]"
    assert len(enc[0].ids[0]) == 8 and enc[0].type_ids[0] == [0, 0, 0, 0, 0, 1, 1, 1]


def test_truncate_cuts_the_response_end_only_when_the_prompt_is_gone(tok) -> None:
    lists = [RankedList(("alpha beta gamma delta epsilon", "x"), (1.0, 0.0), "prompt words")]
    enc, _ = encode_lists(tok, lists, 6, "truncate")
    assert tok.decode(enc[0].ids[0]) == "[CLS] [SEP] alpha beta gamma [SEP]"
    # 3 special tokens leave no room for a response token: the list is filtered, not emptied
    enc, counts = encode_lists(tok, lists, 3, "truncate")
    assert enc == [] and counts["overlong_filtered"] == 1
    assert truncate([-1, 0, 0, -1, 1, 1, -1], 5, "left") == [0, 3, 4, 5, 6]


def test_chat_prompts_use_the_chat_template_and_truncate_old_turns(tok) -> None:
    chat_tok = minilm_tokenizer()
    chat_tok.chat_template = CHAT
    counting = CountingTokenizer(chat_tok)
    chat = [
        {"role": "user", "content": "first turn words"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "last question"},
    ]
    lists = [RankedList(("good one", "bad"), (1.0, 0.0), chat)]
    enc, _ = encode_lists(counting, lists, 64)
    texts = [t for t, _ in counting.seen]
    assert texts[0] == "<user> first turn words <assistant> reply <user> last question <assistant> good one "
    assert list(counting.seen.values()) == [1, 1] and enc[0].type_ids[0] == [0] * len(enc[0].ids[0])
    full = len(enc[0].ids[0])
    enc, counts = encode_lists(chat_tok, lists, full - 4, "truncate", "left")
    assert counts["truncated_responses"] == 2 and len(enc[0].ids[0]) == full - 4
    text = chat_tok.decode(enc[0].ids[0])  # the 4 oldest prompt tokens are gone, "<", "user", ">", "first"
    assert text.startswith("turn words < assistant > reply") and text.endswith("last question < assistant > good one")
    # without a chat template: "role: content" lines as a text prompt
    plain = encode_lists(tok, lists, 64)[0]
    assert tok.decode(plain[0].ids[0]).startswith("[CLS] user : first turn words assistant : reply user : last")


def test_padding_counts_match_the_collated_batches(tok) -> None:
    enc, _ = encode_lists(tok, _lists(), 64)
    batches = [[0, 2], [1]]
    sizes = [np.array(v) for v in zip(*((e.k, e.n_tokens, e.max_len) for e in enc))]
    real, pad = padding_counts(batches, *sizes)
    coll = RankCollator(tok.pad_token_id)
    masks = [coll([enc[i] for i in b])["attention_mask"] for b in batches]
    assert real == sum(int(m.sum()) for m in masks) and pad == sum(int((m == 0).sum()) for m in masks)


def test_encoded_list_properties() -> None:
    e = EncodedList([[1, 2, 3], [4]], None, (1.0, 0.0))
    assert (e.k, e.max_len, e.n_tokens) == (2, 3, 4)
