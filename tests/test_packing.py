"""backbone.packing (issue 18): packed rows give every sequence its unshared forward's score and gradients.

Checked against brute force: the attention each packed token gets is exactly the set of tokens its own
sequence holds before it (decoders) or all of them (encoders); scores and gradients equal `packing=none`
in fp32 on tiny_qwen and tiny_bert for random lists (variable K, chat / text / no prompts, truncation,
left and right padding), for every kernel this machine can run (sdpa, eager, FlexAttention's reference
implementation, a varlen stand-in for flash-attn); a CLI run gives the same val metrics.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from data_fixtures import write_jsonl
from hydra import compose, initialize_config_dir
from test_train import run_cli

from rankrm import CONF_DIR, packing, varlen
from rankrm.backbones import build_reward_model
from rankrm.config import load_option, validate
from rankrm.config.packing import check_packing
from rankrm.data.collate import RankCollator
from rankrm.data.records import RankedList
from rankrm.data.tokenize import encode_lists
from rankrm.encoding import make_encoding
from rankrm.errors import RankrmError
from rankrm.inputs import InputFormat, prompt_text
from rankrm.losses import LOSSES
from rankrm.packing import Lists, allowed, make_layout

WORDS = "the a film was good bad long short plot actor music ending slow fun dull great".split()


def build(name: str, **overrides: Any) -> tuple[Any, Any]:
    cfg = load_option("backbone", name, "dropout=0.0")
    cfg.merge_with(overrides)
    return build_reward_model(cfg)


def text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def random_lists(seed: int, n: int = 5) -> list[RankedList]:
    """Lists of K = 2..5 with no prompt, a text prompt or a chat prompt (two turns), responses of 1-12 words;
    some share their first words (the shared prefix then runs past the prompt)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(2, 5)
        start = text(rng, 1, 2) + " " if rng.random() < 0.3 else ""
        responses = tuple(dict.fromkeys(start + text(rng, 1, 12) + f" r{j}" for j in range(k)))
        kind = rng.choice(["none", "text", "chat"])
        prompt: Any = None
        if kind == "text":
            prompt = text(rng, 2, 15)
        elif kind == "chat":
            prompt = [
                {"role": "user", "content": text(rng, 2, 8)},
                {"role": "assistant", "content": text(rng, 1, 5)},
                {"role": "user", "content": text(rng, 2, 8)},
            ]
        labels = tuple(float(rng.randint(0, 3)) for _ in responses)
        if len(set(labels)) == 1:
            labels = (labels[0] + 1,) + labels[1:]
        out.append(RankedList(responses, labels, prompt, f"t:{i}"))
    return out


def collated(tok: Any, lists: list[RankedList], max_length: int | None) -> dict[str, torch.Tensor]:
    encoded, _ = encode_lists(tok, lists, max_length, overlong="truncate")
    return RankCollator(tok.pad_token_id, tok.padding_side)(encoded)


def run_modes(model: Any, batch: dict[str, torch.Tensor], modes: tuple[str, ...]) -> dict[str, Any]:
    """Per mode: (raw scores, gradients of a ranking loss, Tokens)."""
    out = {}
    for mode in modes:
        model.encoding = make_encoding(1, mode)
        model.zero_grad()
        scores, tokens = model.encode(
            batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), Lists.of(batch)
        )
        mask = batch["mask"]
        rewards = scores.new_zeros(mask.shape).masked_scatter(mask, scores)  # (B, K)
        LOSSES["ranklist"](rewards, batch["labels"], mask).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        out[mode] = (scores.detach(), grads, tokens)
    return out


def assert_same(a: Any, b: Any) -> None:
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], atol=1e-5, rtol=1e-5, msg=name)


# ---------------------------------------------------------------- the layout, against brute force


@pytest.mark.parametrize("seed", range(30))
def test_each_packed_token_attends_to_exactly_its_own_sequence(seed: int) -> None:
    """Brute force: token t of sequence n sees the slots of its own tokens u <= t (causal) or all of them,
    nothing else; shared prefix slots are the same slots for every sequence of a group; rows never exceed
    the longest group (dense) or hold no empty slot (one row)."""
    rng = random.Random(seed)
    sizes = [rng.randint(1, 4) for _ in range(rng.randint(1, 5))]
    lengths = [rng.randint(1, 9) for _ in range(sum(sizes))]
    one_row, causal = rng.random() < 0.5, rng.random() < 0.5
    prefixes, first = [], 0
    for k in sizes:  # a shared prefix only with causal attention (an encoder's is refused: not exact)
        prefixes.append(rng.randint(0, min(lengths[first : first + k]) - 1) if causal else 0)
        first += k
    lay = make_layout(lengths, sizes, prefixes, one_row)
    ok = allowed(lay, causal, torch.device("cpu"))  # (R, W, W)
    w = lay.width
    group_of = [g for g, k in enumerate(sizes) for _ in range(k)]
    own: set[int] = set()
    for n, length in enumerate(lengths):
        slots = lay.index[n, :length].tolist()
        p = prefixes[group_of[n]]
        for t, q in enumerate(slots):
            r = q // w
            seen = {r * w + j for j in range(w) if ok[r, q % w, j]}
            assert seen == {slots[u] for u in range(length) if not causal or u <= t}, (n, t)
        assert not own & set(slots[p:])  # own tokens are nobody else's
        own |= set(slots[p:])
        mates = [m for m in range(len(lengths)) if group_of[m] == group_of[n]]
        assert all(lay.index[m, :p].tolist() == slots[:p] for m in mates)  # the prefix is stored once
    span = [p + sum(lengths[n] - p for n in range(len(lengths)) if group_of[n] == g) for g, p in enumerate(prefixes)]
    assert lay.real == sum(span) == int((lay.group >= 0).sum())
    if not one_row:
        assert lay.width == max(span) and lay.rows <= len(sizes)
        return
    assert lay.rows == 1 and lay.width == lay.real
    seen_by: dict[int, set[int]] = {}  # sdpa_varlen's blocks: each slot a query once, seeing what `allowed` says
    for b in varlen.blocks(lay, causal, torch.float32, torch.device("cpu"))[1]["rankrm_blocks"]:
        for u, i in torch.nonzero(b.q_valid).tolist():
            assert int(b.q[u, i]) not in seen_by
            seen_by[int(b.q[u, i])] = {int(b.k[u, j]) for j in torch.nonzero(b.mask[u, 0, i]).flatten().tolist()}
    assert seen_by == {q: {j for j in range(w) if ok[0, q, j]} for q in range(w)}


@pytest.mark.parametrize("causal", [True, False])
def test_flex_block_mask_follows_the_same_rule(causal: bool) -> None:
    from torch.nn.attention.flex_attention import create_mask

    lay = make_layout([3, 5, 2, 4, 1], [2, 3], [2, 1], one_row=True)
    bm = packing.block_mask(lay, causal, torch.float32, torch.device("cpu"))[0]
    dense = create_mask(bm.mask_mod, lay.rows, 1, lay.width, lay.width, device="cpu")  # (R, 1, W, W)
    assert torch.equal(dense[:, 0], allowed(lay, causal, torch.device("cpu")))


# ---------------------------------------------------------------- what shared_prompt stores once


def prompt_tokens(tok: Any, rl: RankedList) -> int:
    """Brute force: the tokens of `rl`'s prompt alone, rendered as the data layer renders it with the joiner
    "\n\n" (which ends a token, so the prompt's tokens are the sequence's first ones)."""
    if rl.prompt is None:
        return 0 if tok.sep_token is None else 1  # an encoder's [CLS]
    if isinstance(rl.prompt, list) and tok.chat_template:
        pre = tok.apply_chat_template(rl.prompt, tokenize=False, add_generation_prompt=True)
        return len(tok(pre, add_special_tokens=False)["input_ids"])
    if tok.sep_token is not None:  # encoders: a text pair, [CLS] prompt [SEP] response [SEP]
        return len(tok(prompt_text(rl.prompt))["input_ids"])
    return len(tok(prompt_text(rl.prompt) + "\n\n")["input_ids"])


def common_prefix(ids: list[list[int]], types: list[list[int]] | None) -> int:
    """Brute force: leading tokens (ids and types) all sequences agree on, one short of the shortest."""
    p = 0
    while p < min(len(s) for s in ids) - 1 and all(
        s[p] == ids[0][p] and (types is None or t[p] == types[0][p]) for s, t in zip(ids, types or ids)
    ):
        p += 1
    return p


@pytest.mark.parametrize(("name", "side"), [("tiny_qwen", "left"), ("tiny_qwen", "right"), ("tiny_bert", "right")])
def test_shared_prefix_is_each_lists_longest_common_prefix_the_prompt_at_least(name: str, side: str) -> None:
    """`shared_prefixes` (vectorised) equals a loop over each list's sequences, left or right padded, truncated
    or not; untruncated, it covers the whole prompt (responses that begin alike share more)."""
    _, tok = build(name)
    lists = random_lists(3, n=12)
    fmt = InputFormat(joiner="\n\n")
    for max_length in (None, 24):
        encoded, _ = encode_lists(tok, lists, max_length, overlong="truncate", truncation_side="left", fmt=fmt)
        batch = RankCollator(tok.pad_token_id, side)(encoded)
        mask = batch["attention_mask"]
        types = batch.get("token_type_ids")
        got = packing.shared_prefixes(
            packing.align(batch["input_ids"], mask),
            mask.sum(1),
            Lists.of(batch),
            None if types is None else packing.align(types, mask),
        )
        assert got == [common_prefix(e.ids, e.type_ids) for e in encoded]
        if max_length is None:
            assert all(p >= prompt_tokens(tok, rl) for p, rl in zip(got, lists))
            assert any(p > prompt_tokens(tok, rl) for p, rl in zip(got, lists))  # responses that begin alike


# ---------------------------------------------------------------- exactness on the tiny models


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "name,overrides,modes",
    [
        ("tiny_qwen", {"padding_side": "right"}, ("none", "lists", "shared_prompt")),
        ("tiny_qwen", {"padding_side": "left"}, ("none", "lists", "shared_prompt")),
        ("tiny_qwen", {"padding_side": "left", "pooling": "mean"}, ("none", "lists", "shared_prompt")),
        ("tiny_bert", {"pooling": "pooler"}, ("none", "lists")),
        ("tiny_bert", {"pooling": "cls"}, ("none", "lists")),
        ("tiny_bert", {"pooling": "mean"}, ("none", "lists")),
    ],
)
def test_packed_rewards_and_gradients_equal_padded(seed: int, name: str, overrides: dict, modes: tuple) -> None:
    """Both CPU kernels: `sdpa` (dense block masks, rows as wide as the longest group) and `sdpa_varlen`
    (one row, no empty slot); a tiny model is the same in every build (fixed seed)."""
    ref, tok = build(name, **overrides)
    batch = collated(tok, random_lists(seed), max_length=20)  # some prompts truncated
    none = run_modes(ref, batch, ("none",))["none"]
    real = int(batch["attention_mask"].sum())
    for attn in ("sdpa", "sdpa_varlen"):
        model = ref if attn == "sdpa" else build(name, attn_implementation=attn, packing="lists", **overrides)[0]
        out = run_modes(model, batch, modes[1:])
        for mode in modes[1:]:
            assert_same(out[mode], none)
        assert int(none[2].real) == int(out["lists"][2].real) == real
        assert int(out["lists"][2].padded) <= int(none[2].padded)  # dense: rows as wide as the longest sequence
        if attn == "sdpa_varlen":
            assert all(int(o[2].padded) == 0 for o in out.values())
        if "shared_prompt" in out:
            assert int(out["shared_prompt"][2].real) <= real


@pytest.mark.parametrize("seed", range(3))
def test_shared_prompt_encodes_each_common_prefix_once_at_most_the_limit(seed: int) -> None:
    """Untruncated lists: each list costs its longest common prefix once plus the rest of each sequence (a loop
    over the sequences), at most the limit P + sum_k R_k (the prompt once), and the scores stay exact."""
    model, tok = build("tiny_qwen", packing="shared_prompt")  # sdpa_varlen
    ref, _ = build("tiny_qwen")
    lists = random_lists(seed + 10, n=6)
    encoded, _ = encode_lists(tok, lists, None, fmt=InputFormat(joiner="\n\n"))
    batch = RankCollator(tok.pad_token_id, tok.padding_side)(encoded)
    shared = sum(common_prefix(e.ids, None) + sum(len(s) - common_prefix(e.ids, None) for s in e.ids) for e in encoded)
    limit = sum(
        prompt_tokens(tok, rl) + sum(len(s) - prompt_tokens(tok, rl) for s in e.ids) for rl, e in zip(lists, encoded)
    )
    out = run_modes(model, batch, ("shared_prompt",))["shared_prompt"]
    assert (int(out[2].real), int(out[2].padded)) == (shared, 0)
    assert shared <= limit < int(batch["attention_mask"].sum())
    assert_same(out, run_modes(ref, batch, ("none",))["none"])


def test_eager_attention_takes_an_additive_mask() -> None:  # dense rows, as sdpa
    model, tok = build("tiny_qwen", attn_implementation="eager")
    out = run_modes(model, collated(tok, random_lists(5), 20), ("none", "lists", "shared_prompt"))
    assert_same(out["lists"], out["none"])
    assert_same(out["shared_prompt"], out["none"])


def eager_flex(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, training: bool = False, **kw: Any) -> Any:
    """FlexAttention's reference implementation (transformers compiles it: minutes on this CPU)."""
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(query, key, value, **kw)


@pytest.mark.parametrize("name,modes", [("tiny_qwen", ("lists", "shared_prompt")), ("tiny_bert", ("lists",))])
def test_flex_attention_block_mask_scores_equal_padded(monkeypatch: Any, name: str, modes: tuple) -> None:
    """Forward only: torch's CPU FlexAttention has no backward (preflight refuses training with it on a CPU)."""
    import transformers.integrations.flex_attention as tf_flex

    monkeypatch.setattr(tf_flex, "compile_friendly_flex_attention", eager_flex)
    ref, tok = build(name)
    flex, _ = build(name, attn_implementation="flex_attention")
    assert flex.attn_implementation == "flex_attention"
    batch = collated(tok, random_lists(7), 20)
    args = (batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), Lists.of(batch))
    with torch.no_grad():
        expected = ref.encode(*args)[0]
        for mode in modes:
            flex.encoding = make_encoding(1, mode)
            scores, tokens = flex.encode(*args)
            torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
            assert int(tokens.padded) == 0  # one row, no empty slot


def varlen_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: Any = None,
    **kw: Any,
) -> Any:
    """A stand-in for flash-attn varlen on the CPU: one row, each [cu[i], cu[i+1]) attended alone."""
    assert attention_mask is None and query.shape[0] == 1 and cu_seq_lens_q is not None
    reps = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(reps, 1), value.repeat_interleave(reps, 1)
    cu = cu_seq_lens_q.tolist()
    out = torch.cat(
        [
            F.scaled_dot_product_attention(
                query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=module.is_causal, scale=scaling
            )
            for a, b in zip(cu, cu[1:])
        ],
        dim=2,
    )  # (1, heads, L, D)
    return out.transpose(1, 2).contiguous(), None


@pytest.mark.parametrize("name", ["tiny_qwen", "tiny_bert"])
def test_flash_varlen_path_hands_sequence_boundaries_to_the_kernel(monkeypatch: Any, name: str) -> None:
    """What a flash-attn kernel gets (cu_seq_lens through transformers' attention interface) is enough for
    exact scores and gradients; shared_prompt is refused there."""
    from transformers import AttentionInterface

    AttentionInterface.register("rankrm_test_varlen", varlen_attention)
    monkeypatch.setitem(packing.KERNELS, "rankrm_test_varlen", packing.KERNELS["flash_attention_2"])
    ref, tok = build(name)
    var, _ = build(name, attn_implementation="rankrm_test_varlen", packing="lists")
    batch = collated(tok, random_lists(11), 20)
    out = run_modes(var, batch, ("lists",))
    assert_same(out["lists"], run_modes(ref, batch, ("none",))["none"])
    assert int(out["lists"][2].padded) == 0
    with pytest.raises(RankrmError, match="flash-attn varlen has no shared prefix"):
        check_packing("shared_prompt", True, "flash_attention_2")


# ---------------------------------------------------------------- config rules


def compose_train(*overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_packing_rules_refuse_what_cannot_be_exact(monkeypatch: Any) -> None:
    """The schema's rules (`rankrm.config.validate`, what preflight runs first), then the built model's."""
    with pytest.raises(RankrmError, match=r"backbone.packing must be one of none, lists, shared_prompt, got 'pairs'"):
        validate(compose_train("backbone=tiny_qwen", "backbone.packing=pairs"))
    for encoder in ("tiny_bert", "tiny_ernie", "minilm"):  # known from the config: refused before any build
        with pytest.raises(RankrmError, match="shared_prompt needs a decoder"):
            validate(compose_train(f"backbone={encoder}", "backbone.packing=shared_prompt"))
    validate(compose_train("backbone=tiny_qwen", "backbone.packing=shared_prompt"))
    validate(compose_train("backbone=minilm", "backbone.packing=lists"))  # its length_buckets=2: unused when packing
    with pytest.raises(RankrmError, match="flex_attention trains on GPUs only"):
        validate(compose_train("backbone=tiny_qwen", "backbone.attn_implementation=flex_attention", "trainer=cpu"))
    with pytest.raises(RankrmError, match="attention implementations sdpa, sdpa_varlen, eager.*'paged.sdpa'"):
        packing.check_model("lists", True, "paged|sdpa")
    with pytest.raises(RankrmError, match="sdpa_varlen needs backbone.packing=lists or shared_prompt"):
        validate(compose_train("backbone=tiny_qwen", "backbone.attn_implementation=sdpa_varlen"))
    monkeypatch.setattr("rankrm.config.packing.ENCODER_TYPES", frozenset())  # a type the config rule does not know
    with pytest.raises(RankrmError, match="shared_prompt needs a decoder"):
        build("tiny_bert", packing="shared_prompt")  # refused from the built model's attention


def test_every_packing_mode_of_the_schema_has_an_encoding() -> None:
    from typing import get_args

    from rankrm.config.schema import Packing
    from rankrm.encoding import ENCODINGS, Bucketed, Padded

    assert set(ENCODINGS) == set(get_args(Packing))
    assert make_encoding(2, "none") == Bucketed(2) and make_encoding(1, "none") == Padded()
    assert make_encoding(2, "lists") == make_encoding(1, "lists")  # packing replaces length buckets


def test_packing_refuses_sequences_longer_than_a_sliding_window() -> None:
    model, tok = build("tiny_qwen", packing="lists")
    model.base_model.config.sliding_window = 6  # as a Mistral-like config holds it
    short, long = (dict(tok(t, padding=True, return_tensors="pt")) for t in (["a b", "c"], ["a b c d e f g h", "c"]))
    assert model(**short).shape == (2,)  # a window longer than every sequence changes nothing
    with pytest.raises(RankrmError, match="sliding-window attention.*window \\(6 tokens\\)"):
        model(**long)


@pytest.mark.slow
def test_cli_refuses_shared_prompt_on_an_encoder_in_one_line(tmp_path: Path) -> None:
    proc = run_cli(["backbone=tiny_bert", "backbone.packing=shared_prompt", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("rankrm: error: backbone.packing=shared_prompt needs a decoder"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- a training run through the CLI


def chat_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """List JSONL rows with text and chat prompts, K = 2..4."""
    rows = []
    for rl in random_lists(seed, n):
        row: dict[str, Any] = {"responses": list(rl.responses), "scores": list(rl.labels)}
        if rl.prompt is not None:
            row["prompt"] = rl.prompt
        rows.append(row)
    return rows


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,modes", [("tiny_qwen", ("none", "lists", "shared_prompt")), ("tiny_bert", ("none", "lists"))]
)
def test_cli_run_with_packing_gives_the_same_val_metrics(tmp_path: Path, name: str, modes: tuple) -> None:
    """Same seed, dropout off: every mode trains the same model (same val metrics); metrics.json counts the
    tokens encoded, real and padded, per epoch."""
    data = write_jsonl(tmp_path / "lists.jsonl", chat_rows(48, seed=1))
    metrics = {}
    for mode in modes:
        run_dir = tmp_path / mode
        proc = run_cli(
            [
                f"backbone={name}",
                "backbone.dropout=0.0",
                f"backbone.packing={mode}",
                "data=jsonl",
                f"data.source.path={data}",
                "data.max_length=24",
                "data.overlong=truncate",
                "data.batch_size=4",
                "trainer.max_epochs=2",
                "optimizer.lr=1e-3",
                "threads=1",
                "test=false",
                "export=false",
                f"hydra.run.dir={run_dir}",
            ],
            tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics[mode] = json.loads((run_dir / "metrics.json").read_text())
    none = metrics["none"]
    assert none["train"]["epochs"] == 2 and none["val"]["loss"] > 0
    for mode in modes[1:]:
        for key, value in none["val"].items():
            assert metrics[mode]["val"][key] == pytest.approx(value, abs=1e-5), (mode, key)
    tokens = {mode: m["train"]["tokens_encoded"] for mode, m in metrics.items()}
    assert len(tokens["none"]["per_epoch"]) == 2
    assert sum(e["real"] for e in tokens["none"]["per_epoch"]) == tokens["none"]["real"]
    assert tokens["lists"]["real"] == tokens["none"]["real"] == 2 * none["data"]["train"]["tokens"]
    assert tokens["lists"]["padded"] < tokens["none"]["padded"]
    if "shared_prompt" in tokens:
        assert tokens["shared_prompt"]["real"] < tokens["none"]["real"]
