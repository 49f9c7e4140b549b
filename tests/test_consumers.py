"""Every consumer of an export scores what training scored, with its own loading code (issue 15).

Tiny exports of every pooling that trains -- `pooler`, `mean`, `cls` (tiny BERT) and `last_token` (tiny
Qwen2) -- scored on inputs with no prompt, a text prompt and a chat prompt by: the trained model itself
(training's tokens, `rankrm.inputs`), `python -m rankrm.score`, `rankrm.reward_function`, transformers'
pipeline, TRL (GRPO's reward-model path and a real GRPO training step, trl.experimental's `get_reward`),
sentence-transformers (SentenceTransformer, CrossEncoder); OpenRLHF and vLLM against their documented
code (they do not install on CPU). Where the export's consumer table says a consumer differs, the test
checks that it really does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

import rankrm
from rankrm.backbones import build_reward_model
from rankrm.config import load_option
from rankrm.data.collate import RankCollator
from rankrm.data.records import RankedList
from rankrm.data.tokenize import encode_lists
from rankrm.export import export_model
from rankrm.inputs import InputFormat, prompt_text
from rankrm.score import main as score_main

CHAT_1 = [{"role": "user", "content": "How was the film?"}]
CHAT_2 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Rate the food"}]
INPUTS: dict[str, list[tuple[Any, str]]] = {
    "plain": [(None, "a good movie, I loved it"), (None, "bad"), (None, "这家餐厅很好 but slow")],
    "text_prompt": [("How was the film?", "a good movie, I loved it"), ("Rate the food", "bad"), ("Hi", "so so.")],
    "chat": [(CHAT_1, "a good movie, I loved it"), (CHAT_2, "bad"), (CHAT_1, "Great!! really")],
}
EXPORTS = {  # name: backbone config, overrides, reward norm (folded into a biased head; None: no norm)
    "pooler": ("tiny_bert", {}, (0.3, 2.5)),
    "mean": ("tiny_bert", {"pooling": "mean"}, (0.3, 2.5)),
    "cls": ("tiny_bert", {"pooling": "cls"}, None),
    "decoder": ("tiny_qwen", {}, None),
}
HF_EXPORTS, ST_EXPORTS = ("pooler", "decoder"), ("mean", "cls")


class Export:
    """A tiny trained-looking model, its export dir and the scores training's tokens give."""

    def __init__(self, name: str, root: Path) -> None:
        backbone, overrides, norm = EXPORTS[name]
        self.model, self.tok = build_reward_model(OmegaConf.merge(load_option("backbone", backbone), overrides))
        with torch.no_grad():  # a large head: scores differ visibly between texts
            self.model.head.weight.copy_(
                torch.randn(self.model.head.weight.shape, generator=torch.Generator().manual_seed(1))
            )
        self.model.eval()
        if norm:
            self.model.set_reward_norm(*norm)
        self.fmt = InputFormat()
        self.dir = export_model(
            self.model, self.tok, root / name, self.fmt, {"reward_stats": {"mean": 0.1, "std": 2.0, "n": 9}}
        )
        self.meta = json.loads((self.dir / "rankrm.json").read_text())
        self.trained = {kind: self.train_scores(items) for kind, items in INPUTS.items()}

    def batch(self, items: list[tuple[Any, str]], side: str | None = None) -> dict[str, torch.Tensor]:
        """Training's tokens of (prompt, response) items (one response per list, in order), padded on `side`."""
        encoded, _ = encode_lists(self.tok, [RankedList((r,), (0.0,), p) for p, r in items], None, fmt=self.fmt)
        return RankCollator(self.tok.pad_token_id, side or self.tok.padding_side)(encoded)

    def train_scores(self, items: list[tuple[Any, str]]) -> torch.Tensor:
        """The trained model on training's tokens."""
        batch = self.batch(items)
        with torch.no_grad():
            return self.model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    @property
    def encoder(self) -> bool:
        return self.tok.sep_token is not None


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Export]:
    root = tmp_path_factory.mktemp("exports")
    return {name: Export(name, root) for name in EXPORTS}


def close(got: Any, expected: torch.Tensor) -> None:
    torch.testing.assert_close(torch.as_tensor(got, dtype=torch.float32).flatten(), expected.float(), atol=1e-5, rtol=0)


def trl_completion(kind: str, reply: str) -> Any:
    return [{"role": "assistant", "content": reply}] if kind == "chat" else reply


# ---- rankrm itself ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("name", EXPORTS)
def test_rankrm_score_and_reward_function_score_as_trained(exports: dict, name: str, kind: str, tmp_path: Path) -> None:
    ex = exports[name]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"prompt": p, "responses": [r, "filler"]}) + "\n" for p, r in INPUTS[kind]))
    score_main([str(ex.dir), "--jsonl", str(src), "--out", str(out)])
    close([json.loads(line)["rewards"][0] for line in out.read_text().splitlines()], ex.trained[kind])
    reward = rankrm.reward_function(ex.dir, device="cpu", batch_size=2)
    prompts = ["" if p is None else p for p, _ in INPUTS[kind]]  # TRL passes "" for no prompt
    close(
        reward(prompts=prompts, completions=[trl_completion(kind, r) for _, r in INPUTS[kind]], extra=[1, 2, 3]),
        ex.trained[kind],
    )


def test_reward_function_runs_in_bf16_and_says_what_is_wrong(exports: dict) -> None:
    ex = exports["decoder"]
    reward = rankrm.reward_function(ex.dir, device="cpu", dtype=torch.bfloat16)
    assert reward.rm.model.head.weight.dtype == torch.bfloat16
    items = INPUTS["text_prompt"]
    got = torch.tensor(reward([p for p, _ in items], [r for _, r in items]))
    torch.testing.assert_close(
        got, ex.trained["text_prompt"], atol=0.05 * (1 + ex.trained["text_prompt"].abs().max().item()), rtol=0
    )
    with pytest.raises(rankrm.errors.RankrmError, match="2 prompts but 1 completions"):
        reward(["a", "b"], ["c"])
    with pytest.raises(rankrm.errors.RankrmError, match="is not a rankrm export"):
        rankrm.reward_function(ex.dir.parent)


def test_score_stats_prints_the_reward_scale(exports: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ex = exports["pooler"]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"prompt": p, "responses": [r]}) + "\n" for p, r in INPUTS["text_prompt"]))
    score_main([str(ex.dir), "--stats", str(src)])
    stats = json.loads(capsys.readouterr().out)
    s = ex.trained["text_prompt"]
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(s.mean().item(), abs=1e-5)
    assert stats["std"] == pytest.approx(s.std().item(), abs=1e-5) and stats["max"] == pytest.approx(
        s.max().item(), abs=1e-5
    )
    # rankrm.json: the val statistics given to the export, in the units rankrm returns (the norm applied)
    assert ex.meta["reward_stats"] == {
        "split": "val",
        "n": 9,
        "raw": {"mean": 0.1, "std": 2.0},
        "scores": {"mean": pytest.approx((0.1 - 0.3) / 2.5), "std": pytest.approx(2.0 / 2.5)},
    }


# ---- transformers ---------------------------------------------------------------------------------------


def pipeline_call(pipe: Any, ex: Export, prompt: Any, reply: str) -> float:
    """The calls of the model card (`rankrm.export.usage`)."""
    if prompt is None:
        return pipe(reply)[0]["score"]
    if isinstance(prompt, list) and ex.tok.chat_template:
        chat = pipe.tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": reply}], tokenize=False)
        return pipe(chat, add_special_tokens=False)[0]["score"]
    text = prompt_text(prompt)
    if ex.encoder:
        return pipe({"text": text, "text_pair": reply})["score"]
    return pipe(text + ex.fmt.joiner + reply)[0]["score"]


@pytest.mark.parametrize("name", HF_EXPORTS)
def test_transformers_pipeline(exports: dict, name: str) -> None:
    from transformers import pipeline

    ex = exports[name]
    pipe = pipeline("text-classification", model=str(ex.dir))  # no function_to_apply: problem_type=regression
    for kind, items in INPUTS.items():
        close([pipeline_call(pipe, ex, p, r) for p, r in items], ex.trained[kind])


@pytest.mark.parametrize("name", ST_EXPORTS)
def test_transformers_refuses_a_sentence_transformers_export(exports: dict, name: str) -> None:
    """No config.json at the root: loading fails instead of giving the backbone a random head."""
    from transformers import AutoModelForSequenceClassification

    with pytest.raises((OSError, ValueError)):
        AutoModelForSequenceClassification.from_pretrained(exports[name].dir)


# ---- TRL ------------------------------------------------------------------------------------------------


def grpo_trainer(reward_funcs: list[Any], prompts: list[Any], out: Path) -> Any:
    """A GRPO trainer with a tiny random policy on CPU (the decoder tokenizer)."""
    from datasets import Dataset
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from rankrm.locate import resolve_name_or_path

    tok = AutoTokenizer.from_pretrained(resolve_name_or_path("pkg://rankrm/assets/tiny_tokenizer/decoder"))
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    args = GRPOConfig(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=6,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        bf16=False,
        seed=0,
    )
    data = Dataset.from_list([{"prompt": p} for p in prompts])
    return GRPOTrainer(
        model=Qwen2ForCausalLM(config), reward_funcs=reward_funcs, args=args, train_dataset=data, processing_class=tok
    )


@pytest.mark.parametrize("name", HF_EXPORTS)
def test_trl_grpo_reward_model_path(exports: dict, name: str, tmp_path: Path) -> None:
    """TRL's own scoring of a reward model dir (`_calculate_rewards`) next to rankrm.reward_function; the
    export's consumer table says, per input kind, whether the two agree -- and they do exactly then."""
    ex = exports[name]
    trainer = grpo_trainer([str(ex.dir), rankrm.reward_function(ex.dir, device="cpu")], ["x"], tmp_path)
    verdicts = ex.meta["consumers"]["trl_grpo"]["inputs"]
    for kind, items in INPUTS.items():
        prompts = ["" if p is None else p for p, _ in items]
        completions = [trl_completion(kind, r) for _, r in items]
        inputs = [{"prompt": p} for p in prompts]
        if verdicts[kind].startswith("unsupported"):  # TRL raises (encoders have no chat template)
            with pytest.raises(ValueError, match="chat template"):
                trainer._calculate_rewards(inputs, prompts, completions, None)
            continue
        rewards = trainer._calculate_rewards(inputs, prompts, completions, None)  # (N, 2)
        close(rewards[:, 1], ex.trained[kind])  # rankrm.reward_function, inside TRL
        if verdicts[kind] == "exact":
            close(rewards[:, 0], ex.trained[kind])
        else:  # what the one-line warning says: TRL would not score as trained
            assert (rewards[:, 0] - ex.trained[kind]).abs().max() > 1e-3, kind


@pytest.mark.parametrize("chat", [False, True], ids=["text_prompt", "chat"])
def test_reward_function_in_a_real_grpo_training_step(exports: dict, chat: bool, tmp_path: Path) -> None:
    """One GRPO step: TRL generates with the policy and calls rankrm.reward_function next to its own
    reward-model path on the same dir; both give each completion the score rankrm.score gives it."""
    ex = exports["decoder"]
    seen: list[tuple[list, list, list[float]]] = []
    reward = rankrm.reward_function(ex.dir, device="cpu")

    def recorded(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        scores = reward(prompts, completions, **kwargs)
        seen.append((prompts, completions, scores))
        return scores

    recorded.__name__ = "rankrm_recorded"
    prompts = [CHAT_1, CHAT_2] if chat else ["How was the film?", "Rate the food"]
    trainer = grpo_trainer([recorded, str(ex.dir)], prompts, tmp_path)
    trainer.train()
    ((ps, cs, scores),) = seen
    assert len(scores) == 2 and isinstance(cs[0], list) == chat
    close(scores, ex.train_scores([(p, c[0]["content"] if chat else c) for p, c in zip(ps, cs)]))
    log = trainer.state.log_history[0]
    assert log["rewards/rankrm_recorded/mean"] == pytest.approx(log[f"rewards/{ex.dir.name}/mean"], abs=1e-5)


def test_trl_experimental_get_reward(exports: dict) -> None:
    """trl/experimental/utils.py `get_reward` on training's token ids (right-padded): rankrm's scores;
    an encoder export has no `score` head there (what its consumer table says)."""
    from transformers import AutoModelForSequenceClassification
    from trl.experimental.utils import get_reward

    ex = exports["decoder"]
    rm = AutoModelForSequenceClassification.from_pretrained(ex.dir).eval()
    for kind, items in INPUTS.items():
        batch = ex.batch(items, "right")
        with torch.no_grad():
            _, scores, _ = get_reward(rm, batch["input_ids"], ex.tok.pad_token_id, 0)
        close(scores, ex.trained[kind])
    assert not exports["pooler"].meta["consumers"]["trl_get_reward"]["loads"]
    enc = AutoModelForSequenceClassification.from_pretrained(exports["pooler"].dir)
    with pytest.raises(AttributeError, match="score"):
        get_reward(enc, torch.tensor([[2, 5, 6]]), 0, 0)


# ---- sentence-transformers ------------------------------------------------------------------------------


def st_input(prompt: Any, reply: str) -> Any:
    """SentenceTransformer / CrossEncoder input of the model card: a text pair when there is a prompt."""
    return reply if prompt is None else (prompt_text(prompt), reply)


@pytest.mark.parametrize("name", ST_EXPORTS)
def test_sentence_transformer(exports: dict, name: str) -> None:
    from sentence_transformers import SentenceTransformer

    ex = exports[name]
    model = SentenceTransformer(str(ex.dir), device="cpu")  # trust_remote_code is off by default
    assert type(model[2].activation_function).__name__ == "Identity"
    for kind, items in INPUTS.items():
        close(model.encode([st_input(p, r) for p, r in items], convert_to_tensor=True)[:, 0], ex.trained[kind])


def test_cross_encoder(exports: dict) -> None:
    from sentence_transformers import CrossEncoder

    ex = exports["pooler"]
    model = CrossEncoder(str(ex.dir), device="cpu")
    for kind in ("text_prompt", "chat"):
        close(model.predict([st_input(p, r) for p, r in INPUTS[kind]]), ex.trained[kind])


# ---- OpenRLHF and vLLM: their documented code (no CPU install) ---------------------------------------------


def openrlhf_reward(
    model_dir: Path, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool
) -> torch.Tensor:
    """openrlhf/models/model.py `_get_reward_model` (value_head_prefix "score", the CLI default): the base
    model (AutoModel) with positions from the mask, the `score` head over every hidden state, the value at
    the last real token, (r - config.mean) / config.std with --normalize_reward."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(model_dir)
    base = AutoModel.from_pretrained(model_dir, config=config).eval()
    head = load_file(str(model_dir / "model.safetensors"))["score.weight"]  # (1, H), no bias
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(attention_mask == 0, 1)
    with torch.no_grad():
        hidden = base(input_ids, attention_mask=attention_mask, position_ids=position_ids)["last_hidden_state"]
    values = (hidden @ head.T).squeeze(-1)  # (N, T)
    eos = attention_mask.size(1) - 1 - attention_mask.long().fliplr().argmax(dim=1, keepdim=True)
    reward = values.gather(dim=1, index=eos).squeeze(1)
    return (reward - config.mean) / config.std if normalize else reward


def test_openrlhf_convention(exports: dict, tmp_path: Path) -> None:
    ex = exports["decoder"]
    config = json.loads((ex.dir / "config.json").read_text())
    assert (config["mean"], config["std"], config["normalize_reward"]) == (0.1, 2.0, False)  # val statistics
    for kind, items in INPUTS.items():
        batch = ex.batch(items, "left")  # OpenRLHF left-pads its sequences
        close(openrlhf_reward(ex.dir, batch["input_ids"], batch["attention_mask"], False), ex.trained[kind])
        normed = openrlhf_reward(ex.dir, batch["input_ids"], batch["attention_mask"], True)
        close(normed, (ex.trained[kind] - 0.1) / 2.0)
    # a decoder trained with normalize_rewards: --normalize_reward gives rankrm's normalised scores
    ex.model.set_reward_norm(0.4, 3.0)
    try:
        out = export_model(ex.model, ex.tok, tmp_path / "normed")
    finally:
        ex.model.set_reward_norm(0.0, 1.0)
    assert json.loads((out / "config.json").read_text())["normalize_reward"] is True
    batch = ex.batch(INPUTS["chat"], "left")
    reward = rankrm.reward_function(out, device="cpu")
    close(
        openrlhf_reward(out, batch["input_ids"], batch["attention_mask"], True),
        torch.tensor(reward([p for p, _ in INPUTS["chat"]], [r for _, r in INPUTS["chat"]])),
    )
    # an encoder export would load in OpenRLHF with a random `score` head: the table and the warning say so
    assert exports["pooler"].meta["consumers"]["openrlhf"]["silent"] and "openrlhf" in exports["pooler"].meta["warning"]


@pytest.mark.parametrize("name", HF_EXPORTS)
def test_vllm_config_fields(exports: dict, name: str) -> None:
    """vllm/model_executor/layers/pool/activations.py: `get_classification_act_fn` is the identity only for
    problem_type "regression" (else a sigmoid for one label); `get_cross_encoder_act_fn` (the score API)
    resolves config.sentence_transformers["activation_fn"], which must lie under torch.nn.modules."""
    import importlib

    config = json.loads((exports[name].dir / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "reward"}  # one label
    fn = config["sentence_transformers"]["activation_fn"]
    module, _, cls = fn.rpartition(".")
    assert fn.startswith("torch.nn.modules.") and getattr(importlib.import_module(module), cls) is torch.nn.Identity


# ---- the export says what it cannot do ------------------------------------------------------------------


def test_an_export_that_some_consumer_would_misscore_warns_in_one_line(
    exports: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ex = exports["pooler"]
    with caplog.at_level(logging.WARNING, logger="rankrm.export"):
        export_model(ex.model, ex.tok, tmp_path / "enc")
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    line = record.getMessage()
    assert "\n" not in line and "trl_grpo" in line and "no special tokens ([CLS], [SEP])" in line
    assert "rankrm.reward_function" in line
    caplog.clear()
    dec = exports["decoder"]
    with caplog.at_level(logging.WARNING, logger="rankrm.export"):
        export_model(dec.model, dec.tok, tmp_path / "dec")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    card = (tmp_path / "dec" / "README.md").read_text()
    assert "trainer = GRPOTrainer(model=policy, reward_funcs=" in card and "## Input format" in card
