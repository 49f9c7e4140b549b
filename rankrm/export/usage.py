"""The model card's "Use it" examples: one per consumer that takes the export, written for its format
(transformers or sentence-transformers), its kind (an encoder reads a prompt as a text pair, a decoder as
one text with the prompt joiner) and the consumer table (a consumer that would score some input
differently is pointed to `rankrm.reward_function`). The calls are the ones tests/test_consumers.py runs.
"""

from __future__ import annotations

from typing import Any

from rankrm.inputs import InputFormat

M = '"path/to/model"'
P, R = '"How was the film?"', '"It was fine, thanks."'


def _joined(fmt: InputFormat) -> str:
    """A decoder's text prompt and response as one text, in Python."""
    return f"{P} + {R}" if not fmt.joiner else f"{P} + {fmt.joiner!r} + {R}"


ROLE_LINES = "prompt_text(messages)"  # rankrm.inputs.prompt_text: a chat prompt as "role: content" lines


def _block(lang: str, *lines: str) -> list[str]:
    return [f"```{lang}", *lines, "```", ""]


def _rankrm() -> list[str]:
    return [
        "**rankrm** (the scores of training, for every input kind; the way to use it in RL):",
        "",
        *_block(
            "python",
            "import rankrm",
            "",
            f"reward = rankrm.reward_function({M})  # bf16 on a GPU, fp32 on CPU; batches by length, no grad",
            f"reward(prompts=[{P}], completions=[{R}])  # -> [score]; chat: message lists, as TRL passes them",
            "# TRL: GRPOTrainer(model=policy, reward_funcs=reward, ...)",
        ),
        *_block(
            "bash",
            f'python -m rankrm.score path/to/model --prompt {P} {R} "Awful."',
            "python -m rankrm.score path/to/model --stats lists.jsonl   # mean / std of the scores on any data",
        ),
    ]


def _transformers(encoder: bool, fmt: InputFormat) -> list[str]:
    prompt = (
        f'rm({{"text": {P}, "text_pair": {R}}})  # a prompt: a text pair -> {{"label": "reward", "score": ...}}'
        if encoder
        else f"rm({_joined(fmt)})  # a text prompt: one text"
    )
    lines = [
        "from transformers import pipeline",
        *(["from rankrm.inputs import prompt_text"] if encoder else []),
        "",
        f'rm = pipeline("text-classification", model={M})  # problem_type=regression: the raw score, no sigmoid',
        f'rm({R})  # no prompt -> [{{"label": "reward", "score": ...}}]',
        prompt,
    ]
    if encoder:
        lines.append(f'rm({{"text": {ROLE_LINES}, "text_pair": {R}}})  # a chat prompt: its role lines')
    else:
        lines += [
            f'chat = rm.tokenizer.apply_chat_template(messages + [{{"role": "assistant", "content": {R}}}], '
            "tokenize=False)",
            "rm(chat, add_special_tokens=False)  # a chat prompt: the template has its own special tokens",
        ]
    return ["**transformers** (`pipeline`, `AutoModelForSequenceClassification`):", "", *_block("python", *lines)]


def _trl(entry: dict[str, Any]) -> list[str]:
    differs = [f"{k}: {v}" for k, v in entry["inputs"].items() if v != "exact"]
    if differs:
        return [
            f"**TRL**: its reward-model path (`GRPOTrainer(reward_funcs={M})`) would not score this model as "
            f"trained ({'; '.join(differs)}): pass "
            f"`reward_funcs=rankrm.reward_function({M})` instead.",
            "",
        ]
    return [
        "**TRL** (the same scores as rankrm for plain, text-prompt and chat data):",
        "",
        *_block(
            "python", "from trl import GRPOTrainer", "", f"trainer = GRPOTrainer(model=policy, reward_funcs={M}, ...)"
        ),
    ]


def _token_id_consumers() -> list[str]:
    return [
        "**TRL's PPO-style `get_reward`** (`trl.experimental.utils`) and **OpenRLHF** score the token ids of "
        "the policy's sequences (same tokenizer) at the last real token, as rankrm does; they get the raw head output "
        "(OpenRLHF normalises with `--normalize_reward`, from `mean`/`std` in config.json):",
        "",
        *_block(
            "python",
            "from transformers import AutoModelForSequenceClassification",
            "from trl.experimental.utils import get_reward",
            "",
            f"rm = AutoModelForSequenceClassification.from_pretrained({M})",
            "_, scores, _ = get_reward(rm, query_responses, tokenizer.pad_token_id, context_length)",
        ),
        *_block("bash", "python -m openrlhf.cli.train_ppo_ray --reward_pretrain path/to/model --normalize_reward ..."),
    ]


def _vllm(encoder: bool, fmt: InputFormat) -> list[str]:
    call = f"llm.score({P}, {R})  # a prompt: a text pair" if encoder else f"llm.classify([{_joined(fmt)}])"
    return [
        "**vLLM** (by its documented convention, not run here; `problem_type=regression` and the identity "
        "activation in config.json make it return the raw score):",
        "",
        *_block("python", "from vllm import LLM", "", f"llm = LLM(model={M}, runner='pooling')", call),
    ]


def _sentence_transformers(encoder: bool, fmt: InputFormat, version: str) -> list[str]:
    prompt = (
        f"rm.encode([({P}, {R})])[:, 0]  # a prompt: a text pair; a chat prompt: ({ROLE_LINES}, ...)"
        if encoder
        else f"rm.encode([{_joined(fmt)}])[:, 0]  # a text prompt: one text"
    )
    return [
        f"**sentence-transformers** >= 6 (Transformer -> Pooling -> Dense(hidden, 1), identity; no remote code; "
        f"written by {version}):",
        "",
        *_block(
            "python",
            "from sentence_transformers import SentenceTransformer",
            *(["from rankrm.inputs import prompt_text"] if encoder else []),
            "",
            f"rm = SentenceTransformer({M})",
            f"rm.encode([{R}])[:, 0]  # no prompt",
            prompt,
        ),
    ]


def _cross_encoder() -> list[str]:
    return [
        "**sentence-transformers CrossEncoder** (prompt and response pairs; identity activation):",
        "",
        *_block(
            "python", "from sentence_transformers import CrossEncoder", "", f"CrossEncoder({M}).predict([({P}, {R})])"
        ),
    ]


def examples(meta: dict[str, Any], fmt: InputFormat, encoder: bool) -> list[str]:
    """Markdown lines: one example per consumer that takes this export."""
    c = meta["consumers"]
    out = _rankrm()
    if c["transformers"]["loads"]:
        out += _transformers(encoder, fmt) + _trl(c["trl_grpo"])
    if c["trl_get_reward"]["loads"]:
        out += _token_id_consumers()
    if c["vllm"]["loads"]:
        out += _vllm(encoder, fmt)
    if c["sentence_transformers"]["loads"]:
        out += _sentence_transformers(encoder, fmt, meta["versions"].get("sentence_transformers", "?"))
    if c["cross_encoder"]["loads"]:
        out += _cross_encoder()
    return out
