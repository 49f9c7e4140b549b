"""RewardModel: pooling, padding invariance, freeze modes, reward norm, dropout, reproducibility."""

from __future__ import annotations

import copy
import itertools
import pickle
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from transformers.modeling_layers import GradientCheckpointingLayer

from rankrm import CONF_DIR
from rankrm.backbones import build_reward_model
from rankrm.config import load_option
from rankrm.errors import RankrmError
from rankrm.model import RewardModel

CONF = CONF_DIR / "backbone"
TEXTS = ["a good movie, I loved it", "bad", "这家餐厅很好 but slow", "so so"]


def build(name: str, **overrides: Any) -> tuple[RewardModel, Any]:
    cfg = OmegaConf.merge(load_option("backbone", name), overrides)
    return build_reward_model(cfg)


def spread_head(model: RewardModel) -> None:
    """A large random head, so scores differ visibly between texts (the init head is ~0.02)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=gen))


def scores(model: RewardModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch)


@pytest.mark.parametrize("name", ["tiny_bert", "tiny_ernie", "tiny_qwen"])
def test_tiny_backbones_score_and_train(name: str) -> None:
    model, tok = build(name)
    batch = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    out = model(**batch)
    assert out.shape == (len(TEXTS),)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0


def test_tiny_models_are_reproducible_and_leave_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    a, _ = build("tiny_qwen")
    after_build = torch.rand(3)
    torch.manual_seed(123)
    expected = torch.rand(3)
    b, _ = build("tiny_qwen")
    assert torch.equal(after_build, expected)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k, v in sa.items():
        assert torch.equal(v, sb[k]) if isinstance(v, torch.Tensor) else v == sb[k], k


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_last_token_is_pad_side_invariant(pad_is_eos: bool) -> None:
    model, tok = build("tiny_qwen")
    spread_head(model)
    if pad_is_eos:
        tok.pad_token = tok.eos_token
    # Two texts end in a real eos: with pad == eos only the attention mask tells it from padding.
    texts = ["a good movie", "bad<|im_end|>", "这家餐厅很好 and more words here<|im_end|>", "ok"]
    alone = torch.stack([scores(model, dict(tok([t], return_tensors="pt")))[0] for t in texts])
    for side in ("right", "left"):
        tok.padding_side = side
        batch = dict(tok(texts, padding=True, return_tensors="pt"))
        assert (batch["attention_mask"] == 0).any()
        torch.testing.assert_close(scores(model, batch), alone, atol=1e-5, rtol=0)
    assert alone.std() > 1e-3  # the texts really score differently


@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
def test_encoder_poolings_ignore_padded_positions(pooling: str) -> None:
    model, tok = build("tiny_bert", pooling=pooling)
    spread_head(model)
    batch = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    pad = batch["attention_mask"] == 0
    assert pad.any()
    base = scores(model, batch)
    assert base.shape == (len(TEXTS),)
    garbage = batch["input_ids"].clone()
    garbage[pad] = torch.randint(5, len(tok), (int(pad.sum()),))  # real tokens, but masked out
    torch.testing.assert_close(scores(model, {**batch, "input_ids": garbage}), base, atol=1e-5, rtol=0)
    alone = torch.stack([scores(model, dict(tok([t], return_tensors="pt")))[0] for t in TEXTS])
    torch.testing.assert_close(base, alone, atol=1e-5, rtol=0)


def test_mean_pooling_is_the_masked_mean() -> None:
    model, tok = build("tiny_bert", pooling="mean")
    batch = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    model.eval()
    with torch.no_grad():
        hidden = model.backbone(**batch).last_hidden_state  # (N, T, H)
        got = model._pool(type("Out", (), {"last_hidden_state": hidden})(), batch["attention_mask"])
    for i, n in enumerate(batch["attention_mask"].sum(1).tolist()):
        torch.testing.assert_close(got[i], hidden[i, :n].mean(0))


def test_non_pooler_pooling_drops_the_unused_pooler() -> None:
    model, _ = build("tiny_bert", pooling="cls")
    assert model.backbone.pooler is None
    assert all("pooler" not in n for n in model.state_dict())


def test_pooler_pooling_needs_a_pooler() -> None:
    with pytest.raises(RankrmError, match="pooler"):
        build("tiny_qwen", pooling="pooler")
    with pytest.raises(RankrmError, match="pooling must be one of"):
        build("tiny_bert", pooling="max")


def test_head_only_backbone_stays_in_eval_through_copies_and_keeps_the_state_dict_keys() -> None:
    """The eval-only `train` of a frozen backbone survives deepcopy and pickling (ddp_spawn pickles the
    module); freezing renames nothing, so checkpoints load across freeze modes full and head_only."""
    model, _ = build("tiny_bert", freeze="head_only")
    full, _ = build("tiny_bert")
    assert list(model.state_dict()) == list(full.state_dict())
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        twin.train()
        assert twin.head.training and not any(m.training for m in twin.backbone.modules())
        assert twin.trainable_parameter_names() == ["head.weight", "head.bias"]
    model.train()
    assert not model.backbone.training  # the copies did not rebind the original's train


def test_head_only_trains_only_the_head_and_keeps_the_backbone_in_eval() -> None:
    model, _ = build("tiny_ernie", freeze="head_only")
    assert model.trainable_parameter_names() == ["head.weight", "head.bias"]
    assert not any(p.requires_grad for p in model.base_model.pooler.parameters())
    model.train()
    assert model.head.training and not model.backbone.training
    assert not any(m.training for m in model.backbone.modules())


@pytest.mark.parametrize("name,pooler_trains", [("tiny_bert", True), ("tiny_qwen", False)])
def test_lora_trains_adapters_and_head_only(name: str, pooler_trains: bool) -> None:
    model, _ = build(name, freeze="lora")
    assert model.has_lora
    names = model.trainable_parameter_names()
    adapters = [n for n in names if "lora_" in n]
    others = sorted(n for n in names if "lora_" not in n)
    assert len(adapters) == 2 * 2 * 2  # 2 layers x 2 target modules (q, v) x (A, B)
    head = ["head.bias", "head.weight"] if model.head.bias is not None else ["head.weight"]
    pooler = ["backbone.base_model.model.pooler.dense.bias", "backbone.base_model.model.pooler.dense.weight"]
    assert others == sorted(head + (pooler if pooler_trains else []))
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all("lora_" not in n for n in frozen)


def test_lora_target_modules_can_be_set_and_are_checked() -> None:
    model, _ = build("tiny_bert", freeze="lora", lora={"target_modules": "query"})
    assert len([n for n in model.trainable_parameter_names() if "lora_" in n]) == 2 * 2
    with pytest.raises(RankrmError, match="LoRA"):
        build("tiny_bert", freeze="lora", lora={"target_modules": ["no_such_module"]})


def test_reward_norm_is_applied_saved_and_checked() -> None:
    model, tok = build("tiny_bert")
    batch = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    raw = scores(model, batch)
    model.set_reward_norm(0.25, 4.0)
    torch.testing.assert_close(scores(model, batch), (raw - 0.25) / 4.0)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch, normalize=False), raw)
    state = model.state_dict()
    assert state["_extra_state"] == {"reward_mean": 0.25, "reward_std": 4.0}
    fresh, _ = build("tiny_bert")
    fresh.load_state_dict(state)
    assert fresh.reward_norm == (0.25, 4.0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(RankrmError, match="cannot normalise"):
            model.set_reward_norm(0.0, bad)


def test_dropout_override_and_default() -> None:
    kept, _ = build("tiny_bert")
    assert kept.base_model.config.hidden_dropout_prob == 0.1 and kept.dropout.p == 0.1
    off, _ = build("tiny_bert", dropout=0.0)
    cfg = off.base_model.config
    assert cfg.hidden_dropout_prob == cfg.attention_probs_dropout_prob == 0.0 and off.dropout.p == 0.0
    dec, _ = build("tiny_qwen", dropout=0.2)
    assert dec.base_model.config.attention_dropout == 0.2 and dec.dropout.p == 0.0  # HF decoder heads: no dropout


def test_dtype_option() -> None:
    model, tok = build("tiny_qwen", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.isfinite(scores(model, dict(tok(TEXTS, padding=True, return_tensors="pt")))).all()


@pytest.mark.parametrize("name,side", [("tiny_bert", "right"), ("tiny_qwen", "left"), ("tiny_qwen", "right")])
def test_length_buckets_give_the_same_scores_and_gradients(name: str, side: str) -> None:
    """Chunked encoding (length_buckets > 1) only removes padded compute: scores and grads are unchanged."""
    model, tok = build(name, padding_side=side, dropout=0.0)
    spread_head(model)
    texts = [
        "a",
        "a much longer response with many more words in it than the others",
        "mid length one",
        "b c",
        "yet another fairly long response here",
        "x y z",
        "short",
        "the end of it all",
    ]
    batch = tok(texts, return_tensors="pt", padding=True)
    tt = batch.get("token_type_ids")
    grads = []
    for buckets in (1, 3):
        model.zero_grad()
        model.length_buckets = buckets
        s = model(batch["input_ids"], batch["attention_mask"], tt)  # (N,)
        (s * torch.arange(1.0, len(texts) + 1)).sum().backward()
        grads.append((s.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=2e-4, rtol=1e-3)  # float summation order


def brute_force_cells(lengths: list[int], n: int) -> int:
    """Least padded cells over every split of the sorted lengths into at most n contiguous chunks."""
    ls = sorted(lengths)
    best = len(ls) * ls[-1]
    for k in range(1, min(n, len(ls))):
        for cut in itertools.combinations(range(1, len(ls)), k):
            bounds = [0, *cut, len(ls)]
            best = min(best, sum((b - a) * ls[b - 1] for a, b in zip(bounds, bounds[1:])))
    return best


class SumScorer:
    """A model stand-in whose block score is exact and padding-free: the sum of each row's real token ids.
    Records the shape of every block it is given."""

    def __init__(self) -> None:
        self.blocks: list[tuple[int, int]] = []

    def score_block(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: Any) -> torch.Tensor:
        self.blocks.append(tuple(input_ids.shape))
        return (input_ids * attention_mask).sum(-1).double()  # (n,)


@pytest.mark.parametrize("seed", range(20))
def test_encodings_score_every_row_in_input_order_against_one_block(seed: int) -> None:
    """Every strategy gives each row the score of the whole padded block (left and right padding, tied
    lengths); Bucketed sends len(length_chunks) blocks, each as wide as its longest row, and keeps a
    batch of fewer than 2 * buckets rows as one block."""
    from rankrm.encoding import Bucketed, Padded, length_chunks, make_encoding

    g = torch.Generator().manual_seed(seed)
    n, width, buckets = int(torch.randint(1, 13, (1,), generator=g)), 9, int(torch.randint(2, 5, (1,), generator=g))
    lengths = torch.randint(1, width + 1, (n,), generator=g)  # (N,) few distinct values: ties
    mask = (torch.arange(width) < lengths[:, None]).long()  # (N, T) right padded
    if seed % 2:
        mask = mask.flip(-1)  # left padded
    ids = torch.randint(1, 100, (n, width), generator=g) * mask  # (N, T), pads are 0
    expected = (ids * mask).sum(-1).double()  # (N,)
    assert isinstance(make_encoding(1), Padded) and make_encoding(buckets) == Bucketed(buckets)
    for encoding in (Padded(), Bucketed(buckets)):
        scorer = SumScorer()
        torch.testing.assert_close(encoding(scorer, ids, mask, None), expected, rtol=0, atol=0)
        if isinstance(encoding, Padded) or n < 2 * buckets:
            assert scorer.blocks == [(n, width)]
        else:
            chunks = length_chunks(mask.sum(-1), buckets)
            assert scorer.blocks == [(len(c), int(lengths[c].max())) for c in chunks]


@pytest.mark.parametrize("seed", range(40))
def test_length_chunks_are_optimal_against_brute_force(seed: int) -> None:
    """length_chunks: a partition of all rows into <= n chunks with the least padded cells (brute force)."""
    from rankrm.encoding import length_chunks

    g = torch.Generator().manual_seed(seed)
    size, n = int(torch.randint(1, 11, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))
    lengths = torch.randint(1, 8, (size,), generator=g)  # few distinct values: many ties
    chunks = length_chunks(lengths, n)
    assert sorted(torch.cat(chunks).tolist()) == list(range(size))
    assert 1 <= len(chunks) <= n and all(len(c) for c in chunks)
    cells = sum(len(c) * int(lengths[c].max()) for c in chunks)
    assert cells == brute_force_cells(lengths.tolist(), n)
    if len(chunks) > 1:  # fewest chunks among the optimal splits
        assert brute_force_cells(lengths.tolist(), len(chunks) - 1) > cells


@pytest.mark.parametrize(
    "name,freeze", [("tiny_bert", "full"), ("tiny_qwen", "full"), ("tiny_ernie", "lora"), ("tiny_qwen", "lora")]
)
def test_gradient_checkpointing_recomputes_each_layer_and_keeps_the_gradients(name: str, freeze: str) -> None:
    """Checkpointing runs every layer's forward again in the backward (that is the memory it saves);
    scores and gradients are those of the plain model (dropout on: the recompute replays its RNG)."""
    runs = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model, tok = build(name, freeze=freeze, dropout=0.1, gradient_checkpointing=ckpt)
        spread_head(model)
        model.train()
        layers = [m for m in model.base_model.modules() if isinstance(m, GradientCheckpointingLayer)]
        calls: list[int] = []
        for layer in layers:  # a submodule: hooks on the layer itself sit outside the checkpoint
            next(layer.children()).register_forward_hook(lambda *_, calls=calls: calls.append(1))
        batch = dict(tok(TEXTS, padding=True, return_tensors="pt"))
        torch.manual_seed(1)
        s = model(**batch)  # (N,)
        forwards = len(calls)
        (s * torch.arange(1.0, len(TEXTS) + 1)).sum().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        runs.append((s.detach(), grads, forwards, len(calls) - forwards))
    (s0, g0, f0, b0), (s1, g1, f1, b1) = runs
    assert f0 == f1 == len(layers) == 2 and b0 == 0 and b1 == 2  # 2 layers, each recomputed once
    torch.testing.assert_close(s0, s1)
    assert g0.keys() == g1.keys() and any("lora_" in n for n in g0) == (freeze == "lora")
    for n in g0:
        torch.testing.assert_close(g0[n], g1[n], atol=1e-6, rtol=1e-5, msg=n)


def test_gradient_checkpointing_is_refused_with_nothing_to_checkpoint_or_a_non_bool() -> None:
    with pytest.raises(RankrmError, match="gradient_checkpointing.*head_only"):
        build("tiny_bert", freeze="head_only", gradient_checkpointing=True)
    with pytest.raises(RankrmError, match="gradient_checkpointing must be true or false, got 'yes'"):
        build("tiny_bert", gradient_checkpointing="yes")


def test_a_decoder_builds_no_kv_cache() -> None:
    model, tok = build("tiny_qwen")
    out = model.backbone(**dict(tok(TEXTS, padding=True, return_tensors="pt")))
    assert model.base_model.config.use_cache is False and out.past_key_values is None
