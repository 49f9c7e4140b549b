"""Which consumer of an export gets which scores, for which kind of input.

For each consumer the token ids and token types it would feed the model for a probe input of each kind
(no prompt, a text prompt, a chat prompt) are built the way its own code builds them (the file is named
at each builder) and compared with training's (`rankrm.inputs`). Equal tokens give equal scores: the
export was checked to score like the trained model (`rankrm.export.verify`), and the tests run each
consumer that installs on CPU (transformers' pipeline, TRL, sentence-transformers). The table goes to
rankrm.json ("consumers") and the model card; consumers that load the export but would score some input
differently from training, without an error, are named in one warning line at export time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rankrm.data.records import Prompt, RankedList
from rankrm.data.tokenize import tokenize_jobs
from rankrm.inputs import InputFormat, Job, make_job

Ids = tuple[list[int], "list[int] | None"]
PROBES: dict[str, Prompt] = {
    "plain": None,
    "text_prompt": "How was the film?",
    "chat": [{"role": "user", "content": "How was the film?"}],
}
REPLY = "It was fine, thanks."
EXACT = "exact"


class Unsupported(Exception):
    """The consumer cannot take this kind of input at all (it raises, or has no way to pass it)."""


def _ids(tokenizer: Any, job: Job) -> Ids:
    ids, types, _ = tokenize_jobs(tokenizer, [job], None, "left")[0]  # type: ignore[misc]
    return ids, types


def training_ids(tokenizer: Any, fmt: InputFormat, prompt: Prompt, reply: str) -> Ids:
    """What training (and rankrm.score, rankrm.reward_function) feeds the model."""
    return _ids(tokenizer, make_job(tokenizer, RankedList((reply,), (0.0,), prompt), reply, fmt))


def text_inputs(chat_specials: bool) -> Callable[[Any, InputFormat, Prompt, str], Ids]:
    """A consumer given the training format's text (one text, or a text pair for encoders); a chat prompt
    rendered with the chat template is tokenised with (`chat_specials`) or without special tokens."""

    def build(tokenizer: Any, fmt: InputFormat, prompt: Prompt, reply: str) -> Ids:
        job = make_job(tokenizer, RankedList((reply,), (0.0,), prompt), reply, fmt)
        if not job.specials and chat_specials:  # vLLM's classify, SentenceTransformer.encode: one string
            job = Job(job.a)
        return _ids(tokenizer, job)

    return build


def pair_inputs(tokenizer: Any, fmt: InputFormat, prompt: Prompt, reply: str) -> Ids:
    """sentence-transformers' CrossEncoder.predict takes (text, text) pairs only."""
    if prompt is None:
        raise Unsupported("CrossEncoder.predict takes (prompt, response) pairs")
    return training_ids(tokenizer, fmt, prompt, reply)


def trl_grpo_inputs(tokenizer: Any, fmt: InputFormat, prompt: Prompt, reply: str) -> Ids:
    """trl/trainer/grpo_trainer.py `_calculate_rewards` (TRL 1.16): `p + c`, or `apply_chat_template(p + c)`
    for conversational data, then `tokenizer(texts, padding_side="right", add_special_tokens=False)`."""
    if isinstance(prompt, list):
        if not getattr(tokenizer, "chat_template", None):
            raise Unsupported("the tokenizer has no chat template: TRL's apply_chat_template raises")
        text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": reply}], tokenize=False)
    else:
        text = (prompt or "") + reply  # TRL has a prompt for every completion: "" for none
    return _ids(tokenizer, Job(text, specials=False))


@dataclass(frozen=True)
class Consumer:
    """How a consumer loads an export and builds its inputs."""

    how: str  # the call, {dir} = the export dir
    formats: tuple[str, ...]  # export formats it loads: transformers, sentence_transformers
    inputs: Callable[[Any, InputFormat, Prompt, str], Ids] | None  # None: token ids from the RL policy
    checked: str = "tests"  # "tests": run in rankrm's tests; "convention": its documented code, not run here
    score_head: bool = False  # reads the model's `score` head over the last real token (decoders' convention)
    random_head: bool = False  # given a model without that head, builds a random one instead of raising
    encoders_only: bool = False  # takes text pairs: models whose tokenizer has a sep token


CONSUMERS: dict[str, Consumer] = {
    "rankrm": Consumer(
        "rankrm.reward_function('{dir}') / python -m rankrm.score {dir}",
        ("transformers", "sentence_transformers"),
        training_ids,
    ),
    "transformers": Consumer("pipeline('text-classification', model='{dir}')", ("transformers",), text_inputs(False)),
    "trl_grpo": Consumer("GRPOTrainer(reward_funcs='{dir}')", ("transformers",), trl_grpo_inputs),
    # trl/experimental/utils.py `get_reward` (the scoring helper of TRL's PPO-style trainers): `model.score`
    # over the last hidden states, read at the last token before the first pad, positions from the pad mask.
    "trl_get_reward": Consumer(
        "trl.experimental.utils.get_reward(model, ids, pad_id, ctx)", ("transformers",), None, score_head=True
    ),
    # openrlhf/models/model.py `_get_reward_model`: the `score` head (--value_head_prefix score) at the last
    # real token (attention mask), (r - config.mean) / config.std with --normalize_reward.
    "openrlhf": Consumer(
        "--reward_pretrain {dir} [--normalize_reward]", ("transformers",), None, "convention", True, random_head=True
    ),
    # vLLM pooling runner: classify = the last token (decoders) or the pooler (BERT) + the head, identity
    # activation for problem_type=regression; score(prompt, response) = a text pair for cross-encoders.
    "vllm": Consumer(
        "LLM(model='{dir}', runner='pooling').classify(...) / .score(prompt, response)",
        ("transformers",),
        text_inputs(True),
        "convention",
    ),
    "sentence_transformers": Consumer(
        "SentenceTransformer('{dir}').encode(...)", ("sentence_transformers",), text_inputs(True)
    ),
    "cross_encoder": Consumer(
        "CrossEncoder('{dir}').predict([(prompt, response)])", ("transformers",), pair_inputs, encoders_only=True
    ),
}


def _why(tokenizer: Any, theirs: Ids, ours: Ids) -> str:
    """Why two token sequences differ, in a few words."""
    if theirs[0] == ours[0]:
        return "token types differ (training reads a text pair)"
    special = set(getattr(tokenizer, "all_special_ids", []))
    if [t for t in ours[0] if t not in special] == theirs[0]:
        names = sorted({tokenizer.convert_ids_to_tokens(t) for t in ours[0] if t in special})
        return f"no special tokens ({', '.join(names)})"
    return f"other tokens ({tokenizer.decode(theirs[0])!r}, training {tokenizer.decode(ours[0])!r})"


def _inputs(c: Consumer, tokenizer: Any, fmt: InputFormat) -> dict[str, str]:
    if c.inputs is None:
        return {"all": "token ids from the policy: the same scores when they are training's ids (same tokenizer)"}
    out = {}
    for kind, prompt in PROBES.items():
        try:
            theirs, ours = c.inputs(tokenizer, fmt, prompt, REPLY), training_ids(tokenizer, fmt, prompt, REPLY)
        except Unsupported as e:
            out[kind] = f"unsupported: {e}"
            continue
        out[kind] = EXACT if theirs == ours else f"differs: {_why(tokenizer, theirs, ours)}"
    return out


def consumer_table(export_format: str, head: str, tokenizer: Any, fmt: InputFormat, folded: bool) -> dict[str, Any]:
    """Per consumer: how it loads the export, which scores it gets, and per input kind whether its tokens
    are training's. `head`: the export's head (`classifier`, `score`, `dense`); `folded`: the reward norm
    is in the weights (else consumers other than rankrm get raw scores)."""
    table: dict[str, Any] = {}
    for name, c in CONSUMERS.items():
        entry: dict[str, Any] = {"how": c.how, "checked": c.checked}
        if export_format not in c.formats:
            entry["loads"] = False
            entry["why"] = f"this is a {export_format} export"
        elif c.encoders_only and getattr(tokenizer, "sep_token", None) is None:
            entry["loads"] = False
            entry["why"] = "it reads text pairs: for encoders"
        elif c.score_head and head != "score":
            entry["loads"] = False
            entry["why"] = f"it reads a `score` head at the last token; this model's head is `{head}`"
            entry["silent"] = c.random_head  # loads with a random head: scores without an error
        else:
            entry["loads"] = True
            entry["scores"] = "normalised" if folded or name == "rankrm" else "raw"
            entry["inputs"] = _inputs(c, tokenizer, fmt)
        table[name] = entry
    return table


def warning(table: dict[str, Any], model_dir: str) -> str | None:
    """One line naming the consumers that load this export and would score some input differently, or None."""
    bad = []
    for name, e in table.items():
        kinds = [f"{k} ({v.split(': ', 1)[1]})" for k, v in e.get("inputs", {}).items() if v.startswith("differs")]
        if kinds:
            bad.append(f"{name}: {'; '.join(kinds)}")
        elif e.get("silent"):
            bad.append(f"{name}: {e['why']}")
    if not bad:
        return None
    return (
        f"{model_dir} scores differently from training in {' | '.join(bad)}: use rankrm.reward_function"
        f"('{model_dir}') (TRL: reward_funcs=rankrm.reward_function(dir)); rankrm.json 'consumers' has the table"
    )
