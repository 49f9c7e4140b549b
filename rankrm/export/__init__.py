"""Export a RewardModel in its consumers' convention: weights, tokenizer, rankrm.json and a model card.

The format follows from the pooling (`check_exportable`, which the runner calls before training):
- `pooler` (BERT/ERNIE encoders) and `last_token` on decoders: a transformers `...ForSequenceClassification`
  (num_labels=1) that `pipeline`, TRL, OpenRLHF and vLLM load (`export.hf`);
- `mean`, `cls`, and `last_token` on other model types: a sentence-transformers model, Transformer ->
  Pooling -> Dense(hidden, 1) with an identity activation (`export.st`).
Before anything is written the in-memory export is checked to score like the trained model on probe
inputs of every kind (no prompt, text prompt, chat), or the export fails. LoRA adapters are merged first
(on a copy; the model passed in is untouched).

rankrm.json holds what rankrm needs to read the export back and score it as it was trained
(`rankrm.reward.load_reward_model`: format, pooling, input format, reward norm) and what a user of the
scores needs: the val reward statistics (`reward_stats`), which consumer gets which scores for which input
(`consumers`, `export.consumers`; consumers that would score differently are also named in one warning
line), versions. README.md is the model card (`export.card`). The dir is written under a temporary name in
the same parent and renamed into place, so a killed run never leaves a half-written export.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from rankrm.data.collate import RankCollator
from rankrm.data.records import RankedList
from rankrm.data.tokenize import encode_lists
from rankrm.errors import RankrmError
from rankrm.export import card, consumers, hf, st
from rankrm.export.hf import to_hf_classifier  # noqa: F401 (scripts/bench_trl.py builds TRL's model with it)
from rankrm.freeze import merge_lora
from rankrm.inputs import InputFormat
from rankrm.model import POOLINGS, RewardModel

log = logging.getLogger(__name__)
CHECK_TEXTS = ["a short answer", "This is a somewhat longer answer, with a comma and more words!", "好的"]
TOKENIZER_PROBE = CHECK_TEXTS + ["<x> [y]\n 123 ÀÉ"]


def check_exportable_head(pooling: str, head_bias: bool) -> None:
    """The export rules a config decides (pooling, head bias): preflight checks them before training."""
    if pooling not in POOLINGS:
        raise RankrmError(f"cannot export pooling '{pooling}': exports exist for {', '.join(POOLINGS)}")
    if pooling == "last_token" and head_bias:
        raise RankrmError("decoder heads in transformers have no bias: train with backbone.head_bias=false to export")


def check_exportable(model: RewardModel) -> str:
    """The export format of `model` ("transformers" or "sentence_transformers"); RankrmError if it has none
    (the runner calls this once the model is built, before training)."""
    check_exportable_head(model.pooling, model.head.bias is not None)
    if hf.takes(model):
        return "transformers"
    if model.pooling == "pooler":
        raise RankrmError(
            f"cannot export pooling 'pooler' for model type '{model.base_model.config.model_type}': transformers "
            "has no ForSequenceClassification with a classifier on the pooler for it; use pooling=mean or cls"
        )
    if not st.available():
        raise RankrmError(
            f"pooling '{model.pooling}' exports as a sentence-transformers model: pip install sentence-transformers"
        )
    return "sentence_transformers"


def export_model(
    model: RewardModel,
    tokenizer: Any,
    out_dir: str | os.PathLike,
    input_format: InputFormat | None = None,
    run: dict[str, Any] | None = None,
) -> Path:
    """Write `out_dir`: the model in its format, tokenizer, rankrm.json, README.md. `input_format`: how the
    model was trained to read (prompt, response); `run`: what the training run knows (`card.run_summary`:
    data, loss, metrics, val reward statistics), for rankrm.json and the card."""
    fmt, run = input_format or InputFormat(), run or {}
    export_format = check_exportable(model)
    out = Path(out_dir)
    if out.exists() and not (out / "rankrm.json").is_file() and any(out.iterdir()):
        raise RankrmError(f"{out} exists and is not a rankrm export: refusing to overwrite it")
    source = copy.deepcopy(model) if model.has_lora else model
    source.backbone = merge_lora(source.backbone)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        if export_format == "transformers":
            exported: Any = hf.HFExport(source, tokenizer, run.get("reward_stats"))
        else:
            exported = st.STExport(source, tokenizer, tmp)
        verify(source, exported, tokenizer, fmt)
        exported.save(tmp)
        tokenizer.save_pretrained(tmp / exported.backbone_dir)
        _verify_tokenizer_reload(tokenizer, tmp / exported.backbone_dir)
        table = consumers.consumer_table(export_format, exported.head, tokenizer, fmt, exported.folded)
        meta = _metadata(source, exported, fmt, table, run)
        warning = consumers.warning(table, str(out))
        if warning:
            log.warning("export: %s", warning)
            meta["warning"] = warning
        (tmp / "rankrm.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        (tmp / "README.md").write_text(card.model_card(meta, run, tokenizer, fmt), encoding="utf-8")
        _umask_permissions(tmp)
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _probe_batch(tokenizer: Any, fmt: InputFormat) -> dict[str, torch.Tensor]:
    """CHECK_TEXTS with no prompt, a text prompt and a chat prompt, tokenised as training does, padded."""
    lists = [RankedList(tuple(CHECK_TEXTS), (0.0,) * len(CHECK_TEXTS), p) for p in consumers.PROBES.values()]
    encoded, _ = encode_lists(tokenizer, lists, None, fmt=fmt)
    batch = RankCollator(tokenizer.pad_token_id, tokenizer.padding_side)(encoded)
    return {k: v for k, v in batch.items() if k not in ("labels", "mask")}


def verify(model: RewardModel, exported: Any, tokenizer: Any, fmt: InputFormat) -> None:
    """Score probe inputs with the trained model and the in-memory export; raise if they disagree (the
    export would score differently from the model)."""
    batch = _probe_batch(tokenizer, fmt)
    device = next(model.parameters()).device  # the trained model may still be on a GPU; the export is on CPU
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ours = model(**{k: v.to(device) for k, v in batch.items()}, normalize=exported.folded).float().cpu()
            theirs = exported.scores(batch).float()
    finally:
        model.train(was_training)
    tol = 1e-4 if next(model.parameters()).dtype == torch.float32 else 1e-2
    diff = (ours - theirs).abs().max().item()
    if not diff <= tol * (1.0 + ours.abs().max().item()):
        ends_in_pad = bool((batch["input_ids"][:, -1] == tokenizer.pad_token_id).all())
        why = " (the tokenizer ends every text in the pad token: see the pad == eos caveat)" if ends_in_pad else ""
        raise RankrmError(
            f"export check failed: {exported.hf_class} scores differ from the RewardModel by {diff:.3g}{why}"
        )


def _verify_tokenizer_reload(tokenizer: Any, saved: Path) -> None:
    """AutoTokenizer may pick another class for the saved dir (by model type): make sure it encodes alike."""
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(saved)
    same = tokenizer(TOKENIZER_PROBE)["input_ids"] == reloaded(TOKENIZER_PROBE)["input_ids"]
    if not same or reloaded.pad_token_id != tokenizer.pad_token_id:
        raise RankrmError(
            f"export check failed: the saved tokenizer reloads as {type(reloaded).__name__} and encodes "
            f"differently from the training tokenizer ({type(tokenizer).__name__})"
        )


def _metadata(
    model: RewardModel, exported: Any, fmt: InputFormat, table: dict[str, Any], run: dict[str, Any]
) -> dict[str, Any]:
    mean, std = model.reward_norm
    meta: dict[str, Any] = {
        "rankrm_version": card.version(),
        "rankrm_commit": card.commit(),
        "format": exported.kind,
        "backbone_dir": exported.backbone_dir,
        "backbone": model.backbone_name,
        "model_type": model.base_model.config.model_type,
        "hf_class": exported.hf_class,
        "pooling": model.pooling,
        "input_format": fmt.to_metadata(),
        "versions": card.versions(),
        "reward_norm": {"mean": mean, "std": std, "folded_into_head": exported.folded},
    }
    stats = run.get("reward_stats")
    if stats:  # the scores rankrm returns are (raw - mean) / std of the norm
        scores = {"mean": (stats["mean"] - mean) / std, "std": stats["std"] / std}
        meta["reward_stats"] = {
            "split": stats.get("split", "val"),
            "n": stats.get("n"),
            "scores": scores,
            "raw": {"mean": stats["mean"], "std": stats["std"]},
        }
    if "loss" in run:  # name, kwargs and learned values (e.g. a tie model's tie)
        meta["loss"] = run["loss"]
    meta["consumers"] = table
    return meta


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
