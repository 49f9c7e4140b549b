"""The config rules of `backbone.packing` and `backbone.attn_implementation` (issue 18), with no torch:
`Backbone.rules` and `Train.rules` (`rankrm.config.schema`) run them before anything loads, and
`rankrm.packing.check_model` runs `check_packing` again on the built model, whose attention then says
what a config cannot (a hub model's type, the attention transformers actually chose).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rankrm.errors import RankrmError

VARLEN = "sdpa_varlen"  # rankrm's own kernel for packed rows (`rankrm.varlen`), the default under packing
# Bidirectional model types: `shared_prompt` is refused from the config alone (others once the model is built).
ENCODER_TYPES = frozenset(
    "albert bert camembert deberta deberta-v2 distilbert electra ernie mpnet modernbert roberta xlm-roberta".split()
)


def attention_of(packing: str, attn_implementation: str | None) -> str | None:
    """The attention a backbone config asks for: its own; else, when packing, `sdpa_varlen` (one row, no empty
    slot, no masked cell computed: `rankrm.varlen`); else transformers' default (None)."""
    return attn_implementation or (VARLEN if packing != "none" else None)


def shares_prefix(attn_implementation: str | None) -> bool:
    """Whether a kernel can let K sequences see one stored prompt: flash-attn varlen (any "...flash..." kernel)
    only takes independent sequences."""
    return "flash" not in (attn_implementation or "")


def check_packing(packing: str, causal: bool | None, attn_implementation: str | None, key: str = "backbone") -> None:
    """`shared_prompt` only where the backbone is causal (None: not known yet) and the kernel can share a
    prefix; `sdpa_varlen` only under packing (it needs the packed layout)."""
    if packing == "none":
        if attn_implementation == VARLEN:
            raise RankrmError(f"{key}.attn_implementation={VARLEN} needs {key}.packing=lists or shared_prompt")
        return
    if packing == "shared_prompt" and causal is False:
        raise RankrmError(
            f"{key}.packing=shared_prompt needs a decoder (causal attention): an encoder's prompt tokens "
            f"attend to the response, so sharing them would change the model; use {key}.packing=lists"
        )
    if packing == "shared_prompt" and not shares_prefix(attn_implementation):
        raise RankrmError(
            f"{key}.packing=shared_prompt cannot run on attn_implementation={attn_implementation} (flash-attn "
            f"varlen has no shared prefix): use sdpa_varlen, sdpa or flex_attention, or {key}.packing=lists"
        )


def config_causal(cfg: Mapping[str, Any]) -> bool | None:
    """False for a known encoder type the config names (a tiny model's, or a local dir's config.json); None
    when only the built model can tell (a hub id, a GGUF file, an unresolved interpolation)."""
    from rankrm.locate import resolve_name_or_path

    model_type = (cfg.get("tiny") or {}).get("model_type")
    name = cfg.get("name_or_path")
    if model_type is None and isinstance(name, str) and "${" not in name and not cfg.get("gguf_file"):
        try:
            config_json = Path(resolve_name_or_path(name)) / "config.json"
        except RankrmError:  # a package that is not installed: the load reports it
            return None
        if config_json.is_file():
            model_type = json.loads(config_json.read_text()).get("model_type")
    return False if model_type in ENCODER_TYPES else None


def check_backbone(cfg: Mapping[str, Any], key: str) -> None:
    """The packing rules a backbone config decides: `check_packing` with what the config says about the model.
    `length_buckets` is not checked: packing replaces it (a packed batch has no padding to bucket), so a
    backbone whose option buckets (minilm) packs as it is."""
    packing = cfg.get("packing", "none")
    causal = config_causal(cfg) if packing == "shared_prompt" else None
    check_packing(packing, causal, attention_of(packing, cfg.get("attn_implementation")), key)


def check_device(backbone: Mapping[str, Any], accelerator: Any) -> None:
    """FlexAttention only where torch can train with it: its CPU kernel has no backward. torch is imported
    only to resolve accelerator=auto for a flex config."""
    if backbone.get("attn_implementation") != "flex_attention":
        return
    on_cpu = accelerator == "cpu"
    if accelerator == "auto":
        import torch

        on_cpu = not torch.cuda.is_available()
    if on_cpu:
        raise RankrmError(
            "backbone.attn_implementation=flex_attention trains on GPUs only (torch's CPU FlexAttention has no "
            f"backward): leave it null ({VARLEN} with backbone.packing, sdpa without) on the CPU"
        )
