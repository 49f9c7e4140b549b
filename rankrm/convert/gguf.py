"""GGUF -> transformers: a GGUF file (`backbone.gguf_file`) dequantised once (slow) into the conversion cache.

The cache key covers the file's path, size, mtime and the transformers version (which does the
dequantising). Needs the `decoder` extra (gguf, accelerate) for the conversion only: a cached entry
loads without them. Converting SmolLM2-135M's Q4_1 file takes ~20 s.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rankrm.convert.cache import cached_dir
from rankrm.errors import RankrmError
from rankrm.locate import loading


def gguf_to_cache(src_dir: Path, gguf_file: str) -> str:
    """Dequantise `src_dir/gguf_file` once into a cached HF dir (safetensors + tokenizer); return it."""
    import transformers

    gguf = src_dir / gguf_file
    if not gguf.is_file():
        raise RankrmError(f"backbone.gguf_file: no such file {gguf}")
    st = gguf.stat()
    key = f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}"

    def convert(out: Path) -> None:
        missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
        if missing:
            raise RankrmError(f"loading a GGUF file needs {' and '.join(missing)}: pip install gguf accelerate")
        _convert_gguf(src_dir, gguf_file, out)

    return str(cached_dir(gguf.stem, key, convert, what=f"{gguf} (~20 s)"))


def _convert_gguf(src_dir: Path, gguf_file: str, out: Path) -> None:
    """Load the GGUF (dequantised, fp32) and save it as a plain base model + tokenizer in `out`."""
    from transformers import AutoModel, AutoTokenizer

    with loading(str(src_dir / gguf_file)):
        tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_file)
        quantized = AutoModel.from_pretrained(src_dir, gguf_file=gguf_file)
    # A model loaded from GGUF refuses save_pretrained: copy it into a plain model.
    fields = quantized.config.to_dict()
    fields.pop("quantization_config", None)
    plain = AutoModel.from_config(type(quantized.config).from_dict(fields))
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(out)
    tok.save_pretrained(out)
