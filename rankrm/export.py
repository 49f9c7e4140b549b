"""Export a RewardModel as a plain transformers `...ForSequenceClassification` (num_labels=1).

The exported dir loads with `AutoModelForSequenceClassification` + `AutoTokenizer`, so
`pipeline("text-classification", model=dir, function_to_apply="none")` and TRL (PPO/GRPO
reward models) can use it without rankrm. Its scores equal the RewardModel's (checked at
export on sample texts; the export fails rather than write a model that scores differently).

Mapping:
- `pooler` pooling (BERT/ERNIE) -> `BertForSequenceClassification` / `ErnieForSequenceClassification`:
  pooler -> dropout -> `classifier`; the head is copied into `classifier`.
- `last_token` pooling (Llama/Qwen2...) -> `...ForSequenceClassification` whose `score` head has
  no bias (hence `head_bias: false` for decoders), with `config.pad_token_id` set.
  CAVEAT: transformers' decoder heads score the rightmost token != pad_token_id and ignore the
  attention mask, so a text that ENDS in the pad token (e.g. pad == eos and the text ends in
  eos) is scored at the token before it; rankrm's own pooling uses the attention mask.
- `cls` / `mean` pooling have no transformers head: export stops with a RankrmError.
- LoRA adapters are merged first (on a copy; the model passed in is untouched).

Reward normalisation (`set_reward_norm`): with a head bias it is folded into the head
(w / std, (b - mean) / std), so every consumer sees normalised scores. Bias-free (decoder)
heads cannot hold the shift: the weights stay raw and `config.rankrm_reward_mean/std` record
the norm; `rankrm.score` applies it, plain transformers/TRL users get raw scores (an affine
map of the normalised ones, same ranking).

The dir is written under a temporary name in the same parent and renamed into place, so a
killed run never leaves a half-written export; `rankrm.json` records pooling, backbone,
reward norm, the rankrm version and whatever the caller adds (`rankrm.train`: the loss, its kwargs
and the values of learned loss parameters such as a tie model's tie).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

import rankrm
from rankrm.errors import RankrmError
from rankrm.model import RewardModel

# HF head attribute per exportable pooling
HEAD_ATTR = {"pooler": "classifier", "last_token": "score"}
CHECK_TEXTS = ["a short answer", "This is a somewhat longer answer, with a comma and more words!", "好的"]


def check_exportable(model: RewardModel) -> None:
    """Raise RankrmError if `model` cannot be exported (call it before training to fail early)."""
    if model.pooling not in HEAD_ATTR:
        raise RankrmError(
            f"cannot export pooling '{model.pooling}': transformers has no ForSequenceClassification head for it. "
            "Export supports pooling=pooler (BERT/ERNIE encoders) and pooling=last_token (decoders)"
        )
    if model.pooling == "last_token" and model.head.bias is not None:
        raise RankrmError("decoder heads in transformers have no bias: train with backbone.head_bias=false to export")
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as NAMES

    config = model.base_model.config
    if config.model_type not in NAMES:
        raise RankrmError(f"transformers has no ForSequenceClassification class for model type '{config.model_type}'")


def export_model(
    model: RewardModel, tokenizer: Any, out_dir: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> Path:
    """Write `out_dir` (safetensors, tokenizer, rankrm.json plus `metadata`), loadable by
    AutoModelForSequenceClassification."""
    check_exportable(model)
    out = Path(out_dir)
    if out.exists() and not (out / "rankrm.json").is_file() and any(out.iterdir()):
        raise RankrmError(f"{out} exists and is not a rankrm export: refusing to overwrite it")
    source = copy.deepcopy(model) if model.has_lora else model
    source.merge_lora()
    clf = to_hf_classifier(source, tokenizer)
    _verify(source, clf, tokenizer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        clf.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _verify_tokenizer_reload(tokenizer, tmp)
        (tmp / "rankrm.json").write_text(json.dumps({**_metadata(source, clf), **(metadata or {})}, indent=2) + "\n")
        _umask_permissions(tmp)
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def to_hf_classifier(model: RewardModel, tokenizer: Any) -> nn.Module:
    """A transformers ForSequenceClassification (num_labels=1) holding `model`'s weights, in eval mode."""
    from transformers import AutoModelForSequenceClassification

    base = model.base_model
    config = copy.deepcopy(base.config)
    config.num_labels = 1
    config.id2label, config.label2id = {0: "reward"}, {"reward": 0}
    config.pad_token_id = tokenizer.pad_token_id
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
        else:  # bias-free decoder head: raw weights, norm kept in the config
            head.weight.copy_(weight)
            clf.config.rankrm_reward_mean, clf.config.rankrm_reward_std = mean, std
    return clf.eval()


def hf_scores(clf: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Exported model's scores with the stored (unfolded) norm applied: (N, T) inputs -> (N,)."""
    logits = clf(**batch).logits.squeeze(-1)  # (N, 1) -> (N,)
    mean = float(getattr(clf.config, "rankrm_reward_mean", 0.0))
    std = float(getattr(clf.config, "rankrm_reward_std", 1.0))
    return (logits - mean) / std


def _verify(model: RewardModel, clf: nn.Module, tokenizer: Any) -> None:
    """Score CHECK_TEXTS with both models; raise if they disagree (the export would be wrong)."""
    batch = dict(tokenizer(CHECK_TEXTS, padding=True, return_tensors="pt"))
    device = next(model.parameters()).device  # the trained model may still be on a GPU; clf is on CPU
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ours = model(**{k: v.to(device) for k, v in batch.items()}).float().cpu()
            theirs = hf_scores(clf, batch).float()
    finally:
        model.train(was_training)
    tol = 1e-4 if ours.dtype == next(clf.parameters()).dtype == torch.float32 else 1e-2
    diff = (ours - theirs).abs().max().item()
    if not diff <= tol * (1.0 + ours.abs().max().item()):
        ends_in_pad = bool((batch["input_ids"][:, -1] == tokenizer.pad_token_id).all())
        why = " (the tokenizer ends every text in the pad token: see the pad == eos caveat)" if ends_in_pad else ""
        raise RankrmError(
            f"export check failed: {type(clf).__name__} scores differ from the RewardModel by {diff:.3g}{why}"
        )


def _verify_tokenizer_reload(tokenizer: Any, saved: Path) -> None:
    """AutoTokenizer may pick another class for the saved dir (by model type): make sure it encodes alike."""
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(saved)
    texts = CHECK_TEXTS + ["<x> [y]\n 123 ÀÉ"]
    if tokenizer(texts)["input_ids"] != reloaded(texts)["input_ids"] or reloaded.pad_token_id != tokenizer.pad_token_id:
        raise RankrmError(
            f"export check failed: the saved tokenizer reloads as {type(reloaded).__name__} and encodes "
            f"differently from the training tokenizer ({type(tokenizer).__name__})"
        )


def _version() -> str:
    # A stale editable install can make `rankrm` a namespace package without __version__.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return getattr(rankrm, "__version__", None) or version("rankrm")
    except PackageNotFoundError:
        return "unknown"


def _metadata(model: RewardModel, clf: nn.Module) -> dict[str, Any]:
    mean, std = model.reward_norm
    return {
        "rankrm_version": _version(),
        "backbone": model.backbone_name,
        "model_type": clf.config.model_type,
        "hf_class": type(clf).__name__,
        "pooling": model.pooling,
        "reward_norm": {"mean": mean, "std": std, "folded_into_head": not hasattr(clf.config, "rankrm_reward_mean")},
    }


def _umask_permissions(root: Path) -> None:
    """mkdtemp makes a 0700 dir (and safetensors writes 0600 files): give the export the usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for f in root.rglob("*"):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)


def _replace_dir(new: Path, out: Path) -> None:
    """Move `new` to `out`; an existing export at `out` is moved aside first and then deleted."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
