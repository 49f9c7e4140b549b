"""The input format (`rankrm.inputs`): the prompt joiner, text pairs, blank prompts, TRL completions, the
format saved with an export and read back (old exports: the legacy joiner), and training using it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from data_fixtures import write_jsonl
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rankrm import CONF_DIR
from rankrm.data.records import RankedList
from rankrm.errors import RankrmError
from rankrm.inputs import DEFAULT_FORMAT, LEGACY_JOINER, InputFormat, as_prompt, completion_text, make_job
from rankrm.locate import resolve_name_or_path

DECODER = SimpleNamespace(sep_token=None, chat_template=None)
ENCODER = SimpleNamespace(sep_token="[SEP]", chat_template=None)


def _job(tok: object, prompt: object, fmt: InputFormat = DEFAULT_FORMAT) -> tuple:
    job = make_job(tok, RankedList(("resp", "other"), (1.0, 0.0), prompt), "resp", fmt)
    return job.a, job.b, job.spans


@pytest.mark.parametrize(
    "joiner,expected",
    [
        ("", ("promptresp", None, (6, 10))),
        ("\n\n", ("prompt\n\nresp", None, (8, 12))),
        (" ", ("prompt resp", None, (7, 11))),
    ],
)
def test_decoders_join_a_text_prompt_with_the_joiner(joiner: str, expected: tuple) -> None:
    assert _job(DECODER, "prompt", InputFormat(joiner)) == expected


def test_default_joiner_is_trls_prompt_plus_completion() -> None:
    """trl/trainer/grpo_trainer.py `_calculate_rewards` scores `p + c`: the default joins with nothing."""
    p, c = "How was it?", " Fine."
    assert _job(DECODER, p)[0].replace("resp", c) == p + c
    assert InputFormat().joiner == ""


def test_encoders_read_a_text_pair_whatever_the_joiner() -> None:
    assert _job(ENCODER, "prompt", InputFormat("\n\n")) == ("prompt", "resp", None)


@pytest.mark.parametrize("prompt", [None, "", "  \n"])
def test_a_blank_prompt_is_no_prompt(prompt: object) -> None:
    assert as_prompt(prompt) is None
    assert _job(DECODER, prompt) == ("resp", None, None) and _job(ENCODER, prompt) == ("resp", None, None)


def test_chat_prompt_without_template_becomes_role_lines_then_the_text_rule() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    assert _job(DECODER, msgs, InputFormat("|")) == ("user: hi|resp", None, (9, 13))
    assert _job(ENCODER, msgs) == ("user: hi", "resp", None)


def test_the_format_is_saved_and_old_exports_read_with_the_legacy_joiner() -> None:
    fmt = InputFormat("\n### ")
    assert InputFormat.from_metadata({"input_format": fmt.to_metadata()}) == fmt
    assert InputFormat.from_metadata({"pooling": "last_token"}) == InputFormat(LEGACY_JOINER) == InputFormat("\n\n")
    with pytest.raises(RankrmError, match="prompt_joiner must be a string"):
        InputFormat.from_metadata({"input_format": {"prompt_joiner": 3}})


def test_completions_as_trl_passes_them() -> None:
    assert completion_text("plain text", "completion 0") == "plain text"
    assert completion_text([{"role": "assistant", "content": "hey"}], "completion 0") == "hey"
    for bad in ([{"role": "user", "content": "x"}], [], [{"role": "assistant", "content": "a"}] * 2, 3):
        with pytest.raises(RankrmError, match="completion 4: a completion must be a string or one assistant message"):
            completion_text(bad, "completion 4")  # type: ignore[arg-type]


@pytest.mark.parametrize("override,joiner", [(None, ""), ('data.prompt_joiner="\n\n"', "\n\n")])
def test_training_tokenises_with_the_configured_joiner(tmp_path: Path, override: str | None, joiner: str) -> None:
    """`data.prompt_joiner` (a real newline on the command line: bash $'"\\n\\n"') reaches the data module's
    sequences and its stats (metrics.json)."""
    from transformers import AutoTokenizer

    rows = [{"prompt": f"question {i}?", "responses": [f"yes {i}", f"no {i}"]} for i in range(20)]
    data = write_jsonl(tmp_path / "lists.jsonl", rows)
    overrides = ["data=jsonl", f"data.source.path={data}"] + ([override] if override else [])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    tok = AutoTokenizer.from_pretrained(resolve_name_or_path("pkg://rankrm/assets/tiny_tokenizer/decoder"))
    dm = instantiate(cfg.data, tokenizer=tok, seed=0)
    dm.setup("fit")
    assert dm.stats["input_format"] == {"prompt_joiner": joiner}
    first = dm.datasets["train"][0]
    text = tok.decode(first.ids[0])
    assert text.startswith("question ") and f"?{joiner}yes " in text
    assert first.ids[0] == tok(text)["input_ids"]  # one text, tokenised once
