"""Export to transformers (+ pipeline), LoRA merge, reward-norm folding, atomic writes, the score CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

import rankrm
from rankrm import CONF_DIR
from rankrm import export as export_mod
from rankrm.backbones import build_reward_model
from rankrm.config import load_option
from rankrm.errors import RankrmError
from rankrm.export import check_exportable, check_exportable_head, export_model
from rankrm.model import RewardModel
from rankrm.reward import load_reward_model
from rankrm.score import main as score_main

CONF = CONF_DIR / "backbone"
# None ends in a pad token, see the decoder caveat in rankrm/export/hf.py.
TEXTS = ["a good movie, I loved it", "bad", "这家餐厅很好 but the service was slow", "so so.", "Great!!"]
HF_CLASS = {
    "tiny_bert": "BertForSequenceClassification",
    "tiny_ernie": "ErnieForSequenceClassification",
    "tiny_qwen": "Qwen2ForSequenceClassification",
    "minilm": "BertForSequenceClassification",
}


def build(name: str, **overrides: Any) -> tuple[RewardModel, Any]:
    model, tok = build_reward_model(OmegaConf.merge(load_option("backbone", name), overrides))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a large head: scores differ visibly between texts
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=gen))
    return model.eval(), tok


def module_scores(model: RewardModel, tok: Any, texts: list[str] = TEXTS) -> torch.Tensor:
    with torch.no_grad():
        return model(**dict(tok(texts, padding=True, return_tensors="pt")))


def hf_logits(out: Path, texts: list[str] = TEXTS) -> torch.Tensor:
    clf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        return clf(**tok(texts, padding=True, return_tensors="pt")).logits.squeeze(-1)


@pytest.mark.parametrize("name", ["tiny_bert", "tiny_ernie", "tiny_qwen", "minilm"])
def test_export_matches_module_and_pipeline(name: str, tmp_path: Path) -> None:
    model, tok = build(name)
    ours = module_scores(model, tok)
    assert ours.std() > 1e-3
    out = export_model(model, tok, tmp_path / "model")
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "rankrm.json", "tokenizer.json"} <= files
    assert not any(f.endswith((".bin", ".pt")) for f in files)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [HF_CLASS[name]] and config["id2label"] == {"0": "reward"}  # num_labels = 1
    assert config["pad_token_id"] == tok.pad_token_id
    torch.testing.assert_close(hf_logits(out), ours, atol=1e-5, rtol=0)
    pipe = pipeline("text-classification", model=str(out), function_to_apply="none")
    got = torch.tensor([r["score"] for r in pipe(TEXTS)])
    torch.testing.assert_close(got, ours, atol=1e-5, rtol=0)
    meta = json.loads((out / "rankrm.json").read_text())
    assert meta["pooling"] == model.pooling and meta["hf_class"] == HF_CLASS[name]
    assert meta["backbone"].startswith("pkg://") and meta["rankrm_version"]


@pytest.mark.parametrize("name", ["tiny_bert", "tiny_qwen"])
def test_lora_export_is_merged_and_leaves_the_model_alone(name: str, tmp_path: Path) -> None:
    model, tok = build(name, freeze="lora")
    with torch.no_grad():  # non-zero adapters, so merging matters
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    ours = module_scores(model, tok)
    out = export_model(model, tok, tmp_path / "model")
    assert model.has_lora  # the caller's model keeps its adapters
    torch.testing.assert_close(hf_logits(out), ours, atol=1e-5, rtol=0)
    assert not any("lora" in k for k in json.loads((out / "config.json").read_text()))


def test_reward_norm_is_folded_into_a_biased_head(tmp_path: Path) -> None:
    model, tok = build("tiny_bert")
    raw = module_scores(model, tok)
    model.set_reward_norm(0.3, 2.5)
    out = export_model(model, tok, tmp_path / "model")
    torch.testing.assert_close(hf_logits(out), (raw - 0.3) / 2.5, atol=1e-5, rtol=0)
    norm = json.loads((out / "rankrm.json").read_text())["reward_norm"]
    assert norm == {"mean": 0.3, "std": 2.5, "folded_into_head": True}
    assert "normalize_reward" not in json.loads((out / "config.json").read_text())  # OpenRLHF's keys: decoders


def test_reward_norm_of_a_bias_free_head_goes_to_openrlhfs_config_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model, tok = build("tiny_qwen")
    raw = module_scores(model, tok)
    model.set_reward_norm(0.3, 2.5)
    normed = module_scores(model, tok)
    out = export_model(model, tok, tmp_path / "model")
    config = json.loads((out / "config.json").read_text())
    assert (config["normalize_reward"], config["mean"], config["std"]) == (True, 0.3, 2.5)
    torch.testing.assert_close(hf_logits(out), raw, atol=1e-5, rtol=0)  # plain transformers: raw scores
    score_main([str(out), *TEXTS])  # rankrm.score applies the stored norm
    printed = [float(line.split("\t")[0]) for line in capsys.readouterr().out.splitlines()]
    torch.testing.assert_close(torch.tensor(printed), normed, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "name,pooling,fmt",
    [
        ("tiny_bert", "pooler", "transformers"),
        ("tiny_ernie", "pooler", "transformers"),
        ("tiny_qwen", "last_token", "transformers"),
        ("tiny_bert", "cls", "sentence_transformers"),
        ("tiny_bert", "mean", "sentence_transformers"),
        ("tiny_qwen", "mean", "sentence_transformers"),
        ("tiny_bert", "last_token", "sentence_transformers"),
    ],
)
def test_every_pooling_exports(name: str, pooling: str, fmt: str, tmp_path: Path) -> None:
    """The format follows from the pooling and the model type; rankrm reads every one back as trained."""
    model, tok = build(name, pooling=pooling, head_bias=pooling != "last_token")
    assert check_exportable(model) == fmt
    out = export_model(model, tok, tmp_path / "model")
    assert json.loads((out / "rankrm.json").read_text())["format"] == fmt
    texts = TEXTS[:3]
    with torch.no_grad():
        got = load_reward_model(out, device="cpu").model(**dict(tok(texts, padding=True, return_tensors="pt")))
    torch.testing.assert_close(got, module_scores(model, tok, texts), atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean", "last_token"])
def test_preflight_accepts_every_pooling_that_exports(pooling: str) -> None:
    check_exportable_head(pooling, head_bias=pooling != "last_token")
    with pytest.raises(RankrmError, match="cannot export pooling 'max'"):
        check_exportable_head("max", head_bias=True)


def test_decoder_with_a_head_bias_cannot_be_exported(tmp_path: Path) -> None:
    model, tok = build("tiny_qwen", head_bias=True)
    with pytest.raises(RankrmError, match="head_bias=false"):
        export_model(model, tok, tmp_path / "model")


def test_export_is_atomic_and_never_clobbers_other_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tok = build("tiny_bert")
    out = tmp_path / "model"
    export_model(model, tok, out)
    first = (out / "model.safetensors").read_bytes()

    def killed(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(export_mod, "_verify_tokenizer_reload", killed)
    with torch.no_grad():
        model.head.weight.mul_(2)
    with pytest.raises(KeyboardInterrupt):
        export_model(model, tok, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp dir left behind
    assert (out / "model.safetensors").read_bytes() == first  # the previous export is intact
    monkeypatch.undo()
    export_model(model, tok, out)  # replacing a previous export is fine
    assert (out / "model.safetensors").read_bytes() != first
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(RankrmError, match="not a rankrm export"):
        export_model(model, tok, other)
    assert (other / "keep.txt").read_text() == "mine"


def test_score_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model, tok = build("tiny_bert")
    out = export_model(model, tok, tmp_path / "model")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "rankrm.score", str(out), "--rank", *TEXTS[:3]],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    rows = [line.split("\t") for line in run.stdout.splitlines()]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    got = {r[2]: float(r[1]) for r in rows}
    assert list(got.values()) == sorted(got.values(), reverse=True)
    ours = module_scores(model, tok, TEXTS[:3])
    torch.testing.assert_close(torch.tensor([got[t] for t in TEXTS[:3]]), ours, atol=1e-5, rtol=0)
    with pytest.raises(SystemExit) as err:
        score_main([str(tmp_path / "nope"), "x"])
    assert err.value.code == 2 and "rankrm: error:" in capsys.readouterr().err


def test_score_jsonl_with_prompts(tmp_path: Path) -> None:
    model, tok = build("tiny_qwen")
    out = export_model(model, tok, tmp_path / "model")
    lines = [
        {"prompt": "How was it?", "responses": ["great", "bad"], "scores": [2, 1]},
        {"prompt": [{"role": "user", "content": "hi"}], "responses": ["hello there", "go away", "hm"]},
        {"responses": ["no prompt here", "none"]},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    score_main([str(out), "--jsonl", str(src), "--out", str(tmp_path / "out.jsonl"), "--rank", "--batch-size", "2"])
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["scores"] for r in rows[:1]] == [[2, 1]]  # input fields are kept
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}], tokenize=False
    )
    with torch.no_grad():
        expected = model(**dict(tok([chat], add_special_tokens=False, return_tensors="pt")))[0].item()
    assert rows[1]["rewards"][1] == pytest.approx(expected, abs=1e-5)
    for r in rows:
        assert len(r["rewards"]) == len(r["responses"])
        assert r["ranking"] == sorted(range(len(r["rewards"])), key=lambda i: -r["rewards"][i])
    src.write_text('{"responses": ["ok", 3]}\n')
    with pytest.raises(SystemExit) as err:
        score_main([str(out), "--jsonl", str(src)])
    assert err.value.code == 2


def test_score_refuses_a_pickled_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A model dir holding only pytorch_model.bin (pickle) is refused, not loaded."""
    model, tok = build("tiny_bert")
    out = export_model(model, tok, tmp_path / "model")
    clf = AutoModelForSequenceClassification.from_pretrained(out)
    (out / "model.safetensors").unlink()
    torch.save(clf.state_dict(), out / "pytorch_model.bin")  # what an old-style checkpoint holds
    assert (out / "pytorch_model.bin").is_file() and not (out / "model.safetensors").exists()
    with pytest.raises(SystemExit) as err:
        score_main([str(out), "a", "b"])
    assert err.value.code == 2 and "could not load the model" in capsys.readouterr().err


def test_an_export_without_an_input_format_is_read_with_the_old_joiner(tmp_path: Path) -> None:
    """rankrm 0.1.0 exports (no input_format in rankrm.json) were trained on prompt + "\\n\\n" + response."""
    model, tok = build("tiny_qwen")
    out = export_model(model, tok, tmp_path / "model")
    meta = json.loads((out / "rankrm.json").read_text())
    assert meta["input_format"] == {"prompt_joiner": ""}
    del meta["input_format"]
    (out / "rankrm.json").write_text(json.dumps(meta))
    got = rankrm.reward_function(out, device="cpu")(["How was it?"], ["great"])
    assert got == pytest.approx(module_scores(model, tok, ["How was it?\n\ngreat"]).tolist(), abs=1e-5)
