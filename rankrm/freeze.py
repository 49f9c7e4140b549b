"""What trains in a backbone: the freeze modes (`backbone.freeze`), applied where the backbone is built.

- `full`: everything trains.
- `head_only`: the backbone (including its pooler) is frozen and stays in eval mode whatever
  `train()` asks, so its features are deterministic (no dropout on frozen features).
- `lora`: the backbone is wrapped in peft LoRA adapters; the adapters train, and so does the pooler
  when the pooling reads it (in the seed design the pooler is part of the head).

Each mode maps a built backbone to the backbone the model holds (`freeze_backbone`); `merge_lora`
folds the adapters back into plain weights for the export. Besides the mode, `train_word_embeddings=False`
(`backbone.freeze_word_embeddings`) keeps the word-embedding table of a fully trained backbone fixed: in a
large-vocabulary encoder it is most of the parameters (96M of multilingual-e5-small's 117.6M), so the
optimizer holds no state for it and its gradient is never formed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from rankrm.errors import RankrmError

# LoRA targets when `lora.target_modules` is null; other model types fall back to peft's table.
LORA_TARGETS = {
    "bert": ["query", "value"],
    "ernie": ["query", "value"],
    "roberta": ["query", "value"],
    "llama": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
}


def _full(backbone: nn.Module, lora: Mapping[str, Any], train_pooler: bool) -> nn.Module:
    return backbone


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    """`train` of a frozen backbone: whatever mode is asked for, the backbone and its submodules stay in eval."""
    return nn.Module.train(module, False)


def _head_only(backbone: nn.Module, lora: Mapping[str, Any], train_pooler: bool) -> nn.Module:
    backbone.requires_grad_(False)
    # An instance attribute shadows nn.Module.train, so the parent's train() (Lightning's, the model's)
    # reaches it through children(); a partial of a module-level function pickles and deep-copies.
    backbone.train = functools.partial(_stay_in_eval, backbone)  # type: ignore[method-assign]
    return backbone.eval()


def _lora(backbone: nn.Module, lora: Mapping[str, Any], train_pooler: bool) -> nn.Module:
    """`backbone` wrapped in peft LoRA adapters from {r, alpha, dropout, target_modules}."""
    from peft import LoraConfig, get_peft_model
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    model_type = backbone.config.model_type
    targets = lora.get("target_modules") or LORA_TARGETS.get(model_type) or PEFT_TARGETS.get(model_type)
    if not targets:
        raise RankrmError(
            f"no default LoRA target modules for model type '{model_type}': set backbone.lora.target_modules"
        )
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    config = LoraConfig(
        r=int(lora.get("r", 8)),
        lora_alpha=int(lora.get("alpha", 16)),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=list(targets),
    )
    try:
        wrapped = get_peft_model(backbone, config)
    except ValueError as e:  # peft: target modules not found in the model
        raise RankrmError(f"LoRA: {e}") from e
    if train_pooler:
        wrapped.get_base_model().pooler.requires_grad_(True)
    return wrapped


FREEZERS: dict[str, Callable[[nn.Module, Mapping[str, Any], bool], nn.Module]] = {
    "full": _full,
    "head_only": _head_only,
    "lora": _lora,
}
FREEZE_MODES = tuple(FREEZERS)


def freeze_backbone(
    backbone: nn.Module,
    mode: str,
    lora: Mapping[str, Any] | None = None,
    train_pooler: bool = False,
    train_word_embeddings: bool = True,
) -> nn.Module:
    """Apply freeze mode `mode` to a built backbone; returns the backbone to hold (peft-wrapped for `lora`).
    `train_pooler`: keep the pooler trainable under LoRA (pooling=pooler reads it). `train_word_embeddings`
    false: the input embedding table does not train either (the other modes train none of it anyway)."""
    if mode not in FREEZE_MODES:
        raise RankrmError(f"backbone.freeze must be one of {', '.join(FREEZE_MODES)}, got '{mode}'")
    if not train_word_embeddings:
        backbone.get_input_embeddings().requires_grad_(False)
    return FREEZERS[mode](backbone, lora or {}, train_pooler)


def has_lora(backbone: nn.Module) -> bool:
    """Whether the backbone is wrapped in peft adapters."""
    return hasattr(backbone, "merge_and_unload")


def merge_lora(backbone: nn.Module) -> nn.Module:
    """The backbone with its LoRA adapters folded into the weights (in place); unchanged without LoRA."""
    return backbone.merge_and_unload() if has_lora(backbone) else backbone
