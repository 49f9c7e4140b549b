"""RewardModel -> a transformers `...ForSequenceClassification` (num_labels=1), for `pooler` encoders and
`last_token` decoders, with the config fields each consumer of such a model reads.

Heads:
- `pooler` (BERT/ERNIE) -> `BertForSequenceClassification` / `ErnieForSequenceClassification`: pooler ->
  dropout -> `classifier`; the head is copied into `classifier`. The reward norm is folded into it
  (w / std, (b - mean) / std), so every consumer sees normalised scores.
- `last_token` (Llama/Qwen2...) -> `...ForSequenceClassification` whose `score` head has no bias (hence
  `head_bias: false` for decoders), with `config.pad_token_id` set. A bias-free head cannot hold the shift:
  the weights stay raw and consumers get raw scores (an affine map of the normalised ones, same ranking).
  CAVEAT: transformers' decoder heads score the rightmost token != pad_token_id and ignore the attention
  mask, so a text that ENDS in the pad token (pad == eos and the text ends in eos) is scored at the
  token before it; rankrm's own pooling uses the attention mask.

Config fields written for consumers (each read by the file named):
- `problem_type: regression`: transformers' text-classification pipeline then applies no sigmoid
  (transformers/pipelines/text_classification.py `postprocess`), nor does vLLM's classify pooler
  (vllm/model_executor/layers/pool/activations.py `get_classification_act_fn`).
- `sentence_transformers.activation_fn: torch.nn.modules.linear.Identity`: sentence-transformers'
  CrossEncoder (sentence_transformers/cross_encoder/model.py `get_default_activation_fn`) and vLLM's
  score API (activations.py `get_cross_encoder_act_fn`) return the raw logit, not its sigmoid.
- decoders: `normalize_reward`, `mean`, `std`: OpenRLHF's reward model (openrlhf/models/model.py
  `_get_reward_model`) reads its `score` head at the last real token and, run with --normalize_reward,
  returns (reward - config.mean) / config.std. mean/std are the val statistics of the raw scores;
  `normalize_reward` says whether rankrm itself normalises.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rankrm.errors import RankrmError
from rankrm.model import RewardModel

# transformers' head attribute per pooling it implements
HEAD_ATTR = {"pooler": "classifier", "last_token": "score"}
IDENTITY = "torch.nn.modules.linear.Identity"


def hf_class_head(config: Any) -> str | None:
    """The attribute holding the `Linear(hidden, 1)` head of the model type's ForSequenceClassification
    (`classifier`, `score`), or None when transformers has no such class. Built on the meta device: no memory."""
    from transformers import AutoModelForSequenceClassification
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as NAMES

    if config.model_type not in NAMES:
        return None
    cfg = copy.deepcopy(config)
    cfg.num_labels = 1
    with torch.device("meta"):
        clf = AutoModelForSequenceClassification.from_config(cfg)
    for attr in ("classifier", "score"):
        head = getattr(clf, attr, None)
        if isinstance(head, nn.Linear) and head.out_features == 1:
            return attr
    return None


def takes(model: RewardModel) -> bool:
    """Whether transformers has a head class that computes what `model` does (pooler -> classifier, last
    token -> a decoder's score)."""
    attr = HEAD_ATTR.get(model.pooling)
    return attr is not None and hf_class_head(model.base_model.config) == attr


def to_hf_classifier(model: RewardModel, tokenizer: Any, reward_stats: dict[str, float] | None = None) -> nn.Module:
    """A transformers ForSequenceClassification (num_labels=1) holding `model`'s weights, in eval mode.
    `reward_stats`: mean / std of the raw val scores (for OpenRLHF's norm keys; default: the model's norm)."""
    from transformers import AutoModelForSequenceClassification

    base = model.base_model
    config = copy.deepcopy(base.config)
    config.num_labels = 1
    config.id2label, config.label2id = {0: "reward"}, {"reward": 0}
    config.pad_token_id = tokenizer.pad_token_id
    config.problem_type = "regression"
    config.sentence_transformers = {"activation_fn": IDENTITY}
    dtype = next(base.parameters()).dtype
    clf = AutoModelForSequenceClassification.from_config(config, dtype=dtype)
    getattr(clf, clf.base_model_prefix).load_state_dict(base.state_dict())
    head = getattr(clf, HEAD_ATTR[model.pooling], None)
    if not (isinstance(head, nn.Linear) and head.out_features == 1):
        raise RankrmError(
            f"{type(clf).__name__} has no Linear '{HEAD_ATTR[model.pooling]}' head: "
            f"pooling '{model.pooling}' cannot be exported for model type '{config.model_type}'"
        )
    mean, std = model.reward_norm
    with torch.no_grad():
        weight = model.head.weight.detach()  # (1, H)
        bias = model.head.bias.detach() if model.head.bias is not None else torch.zeros(1, dtype=weight.dtype)
        if head.bias is not None:  # fold the norm into the head
            head.weight.copy_(weight / std)
            head.bias.copy_((bias - mean) / std)
        else:  # bias-free decoder head: raw weights; OpenRLHF's keys carry the norm
            head.weight.copy_(weight)
            stats = reward_stats or {"mean": mean, "std": std}
            clf.config.normalize_reward = (mean, std) != (0.0, 1.0)
            clf.config.mean, clf.config.std = float(stats["mean"]), float(stats["std"])
    return clf.eval()


class HFExport:
    """The in-memory transformers model of an export: what it scores, and writing it."""

    kind = "transformers"
    backbone_dir = ""  # config, weights and tokenizer at the root

    def __init__(self, model: RewardModel, tokenizer: Any, reward_stats: dict[str, float] | None) -> None:
        self.clf = to_hf_classifier(model, tokenizer, reward_stats)
        self.head = HEAD_ATTR[model.pooling]
        self.folded = getattr(self.clf, self.head).bias is not None  # the norm is in the weights
        self.hf_class = type(self.clf).__name__

    def scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """What transformers (pipeline, TRL) computes: logits (N, 1) -> (N,)."""
        return self.clf(**batch).logits[:, 0]

    def save(self, out: Path) -> None:
        self.clf.save_pretrained(out)


def load_parts(model_dir: Path, pooling: str, dtype: torch.dtype) -> tuple[nn.Module, nn.Linear]:
    """(base model, head) of a transformers export, as rankrm reads it back."""
    from transformers import AutoModelForSequenceClassification

    # safetensors only: a pickled pytorch_model.bin can run code on load, and exports never write one.
    clf = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True, dtype=dtype)
    if clf.config.num_labels != 1:
        raise RankrmError(f"{model_dir} has {clf.config.num_labels} labels; a reward model has 1")
    return getattr(clf, clf.base_model_prefix), getattr(clf, HEAD_ATTR[pooling])
