"""How a (prompt, response) becomes model input: the one home of the input format.

Training (`rankrm.data.tokenize`), `rankrm.score`, `rankrm.reward_function` and the export's consumer
checks (`rankrm.export.consumers`) all build their sequences with `make_job`, so a model is scored the
way it was trained, and the format a model was trained with is saved in its export (`rankrm.json`).

- no prompt (None, or empty / whitespace-only text): the response alone, with the tokenizer's special tokens;
- text prompt + a tokenizer with a `sep_token` (encoders): the text pair (prompt, response), i.e.
  `[CLS] prompt [SEP] response [SEP]` with token types 0 / 1 -- the input BERT-style encoders are
  pretrained on, and what `pipeline({"text", "text_pair"})`, sentence-transformers and vLLM's score API
  feed them;
- text prompt + no `sep_token` (decoders): one text `prompt + joiner + response`. The joiner
  (`data.prompt_joiner`) is "" by default because that is what TRL feeds a reward model: GRPO's
  `_calculate_rewards` scores `p + c` (trl/trainer/grpo_trainer.py) and RewardTrainer `prompt + chosen`;
- chat prompt (a list of messages): `apply_chat_template(prompt + [assistant reply], tokenize=False)`,
  tokenised without extra special tokens (the template has its own), as TRL's GRPO does; a tokenizer
  without a chat template gets the messages as "role: content" lines, then the text-prompt rule above.

Exports written before the joiner was a setting (no `input_format` in rankrm.json) joined with "\\n\\n":
`InputFormat.from_metadata` reads them with that joiner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rankrm.data.records import Prompt, RankedList
from rankrm.errors import DataError, RankrmError

LEGACY_JOINER = "\n\n"  # what rankrm 0.1.0 exports were trained with (no input_format recorded)


@dataclass(frozen=True)
class InputFormat:
    """The settings of the input format (everything else follows from the prompt and the tokenizer)."""

    joiner: str = ""  # plain-text prompt + joiner + response, for tokenizers without a sep token (decoders)

    def to_metadata(self) -> dict[str, Any]:
        """What rankrm.json records (and a token cache key must include)."""
        return {"prompt_joiner": self.joiner}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> InputFormat:
        """The format of an export from its rankrm.json (older exports: the legacy joiner)."""
        fmt = meta.get("input_format")
        if fmt is None:
            return cls(joiner=LEGACY_JOINER)
        joiner = fmt.get("prompt_joiner")
        if not isinstance(joiner, str):
            raise RankrmError(f"rankrm.json: input_format.prompt_joiner must be a string, got {joiner!r}")
        return cls(joiner=joiner)


DEFAULT_FORMAT = InputFormat()


@dataclass
class Job:
    """One response to tokenise: `a` (+ `b` as the pair's second text) or a rendered text with char spans."""

    a: str
    b: str | None = None
    specials: bool = True
    spans: tuple[int, int] | None = None  # rendered text: [0, p_end) prompt, [p_end, r_end) reply


def as_prompt(prompt: Prompt) -> Prompt:
    """None for an empty or whitespace-only text prompt (TRL passes "" for no prompt); others unchanged."""
    if isinstance(prompt, str) and not prompt.strip():
        return None
    return prompt


def prompt_text(prompt: Prompt) -> str | None:
    """A chat prompt as plain text, one "role: content" line per message (no chat template)."""
    if prompt is None or isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def completion_text(completion: str | list[Mapping[str, Any]], where: str) -> str:
    """The reply of a TRL completion: a string, or a conversational completion of one assistant message."""
    if isinstance(completion, str):
        return completion
    if (
        isinstance(completion, list)
        and len(completion) == 1
        and isinstance(completion[0], Mapping)
        and completion[0].get("role") == "assistant"
        and isinstance(completion[0].get("content"), str)
    ):
        return completion[0]["content"]
    raise RankrmError(
        f"{where}: a completion must be a string or one assistant message "
        f"[{{'role': 'assistant', 'content': str}}], got {str(completion)[:80]!r}"
    )


def _chat_job(tokenizer: Any, rl: RankedList, resp: str) -> Job:
    msgs = list(rl.prompt) + [{"role": "assistant", "content": resp}]  # type: ignore[arg-type]
    try:
        full = tokenizer.apply_chat_template(msgs, tokenize=False)
    except Exception as e:  # noqa: BLE001 -- a jinja error means these messages don't fit the template
        raise DataError(rl.source, None, "prompt", f"the chat template rejects these messages: {e}") from None
    start = full.rfind(resp)
    if start >= 0:
        return Job(full, specials=False, spans=(start, start + len(resp)))
    pre = tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
    return Job(full, specials=False, spans=(len(pre) if full.startswith(pre) else 0, len(full)))


def make_job(tokenizer: Any, rl: RankedList, resp: str, fmt: InputFormat = DEFAULT_FORMAT) -> Job:
    """How to tokenise `resp` of list `rl` with `tokenizer` (see the module docstring)."""
    if isinstance(rl.prompt, list) and getattr(tokenizer, "chat_template", None):
        return _chat_job(tokenizer, rl, resp)
    prompt = prompt_text(as_prompt(rl.prompt))
    if prompt is None:
        return Job(resp)
    if getattr(tokenizer, "sep_token", None) is not None:
        return Job(prompt, resp)
    text = prompt + fmt.joiner + resp
    return Job(text, spans=(len(prompt) + len(fmt.joiner), len(text)))
