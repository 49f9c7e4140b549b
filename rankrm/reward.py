"""Score with an exported reward model exactly as it was trained: `load_reward_model`, `score_lists`, and
`reward_function`, a reward function for RL trainers with TRL's signature.

An export (transformers or sentence-transformers format, `rankrm.export`) is read back into a
`RewardModel` -- backbone, pooling, head and reward norm: the forward training ran -- with its tokenizer
and the input format recorded in rankrm.json, so `rankrm.score` and the reward function build the
token sequences training built (`rankrm.inputs`: text pair, prompt joiner, chat template) and return
the scores `rankrm.score` prints. `load_classifier` reads any other one-label
`AutoModelForSequenceClassification` (a third-party reward model) into the same `LoadedRewardModel`, so
`rankrm.evaluate` scores every model through `score_lists`.

    reward = rankrm.reward_function("outputs/.../model")
    GRPOTrainer(model=policy, reward_funcs=reward, ...)   # TRL calls reward(prompts=..., completions=..., ...)

Time and memory: one forward per `batch_size` sequences (sorted by length, so a batch pads little), no
gradient; the model's weights once on `device` (bf16 on a GPU).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rankrm.data.records import RankedList
from rankrm.errors import RankrmError
from rankrm.inputs import DEFAULT_FORMAT, InputFormat, as_prompt, completion_text
from rankrm.model import RewardModel


@dataclass
class LoadedRewardModel:
    """An export read back: the model (eval, no grad), its tokenizer, its input format and rankrm.json."""

    model: RewardModel | ClassifierScores  # called as `model(**batch) -> (N,)` rewards
    tokenizer: Any
    input_format: InputFormat
    metadata: dict[str, Any]
    path: Path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _default_device(device: str | torch.device | None) -> torch.device:
    """`device`, else this process's GPU (LOCAL_RANK under torchrun / accelerate: each rank scores on its own,
    even when the reward function is built before the trainer sets the device), else the CPU."""
    if device is not None:
        return torch.device(device)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))


def placement(device: str | torch.device | None, dtype: torch.dtype | None) -> tuple[torch.device, torch.dtype]:
    """Where a loaded model runs and in which dtype: `device` (default `_default_device`) and `dtype`
    (default bf16 on a GPU, else fp32)."""
    dev = _default_device(device)
    return dev, dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)


def load_reward_model(
    model_dir: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> LoadedRewardModel:
    """Read an export. `device`: default a GPU when there is one; `dtype`: default bf16 on a GPU, else fp32."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from rankrm.export import hf, st

    d = Path(model_dir).expanduser()
    if not (d / "rankrm.json").is_file():
        raise RankrmError(f"{d} is not a rankrm export (no rankrm.json); export one with rankrm-train")
    meta = json.loads((d / "rankrm.json").read_text())
    dev, dtype = placement(device, dtype)
    fmt, pooling = InputFormat.from_metadata(meta), meta["pooling"]
    hf_logging.disable_progress_bar()
    try:
        if meta.get("format", "transformers") == "transformers":
            base, head = hf.load_parts(d, pooling, torch.float32)
        else:
            base, head = st.load_parts(d, torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(d / meta.get("backbone_dir", ""))
    except (OSError, ValueError) as e:
        raise RankrmError(f"could not load the model in {d}: {str(e).strip().splitlines()[0]}") from e
    model = RewardModel(base, pooling, head_bias=head.bias is not None, backbone_name=meta.get("backbone", ""))
    model.head.load_state_dict(head.state_dict())
    norm = meta.get("reward_norm") or {}
    if not norm.get("folded_into_head", True) and (norm["mean"], norm["std"]) != (0.0, 1.0):
        model.set_reward_norm(norm["mean"], norm["std"])  # a bias-free head: the norm is applied here
    model.requires_grad_(False)
    return LoadedRewardModel(model.to(dev, dtype).eval(), tokenizer, fmt, meta, d)


class ClassifierScores(torch.nn.Module):
    """A third-party reward model (`AutoModelForSequenceClassification`, one label) called as a `RewardModel`:
    `forward(input_ids, attention_mask, token_type_ids=None) -> (N,)` rewards, its logit."""

    def __init__(self, classifier: torch.nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.classifier(input_ids=input_ids, attention_mask=attention_mask, **kw).logits[:, 0]  # (N, 1) -> (N,)


def load_classifier(
    model_dir: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> LoadedRewardModel:
    """Any local `AutoModelForSequenceClassification` dir with one label (a reward model not trained by rankrm;
    safetensors only: a pickled checkpoint can run code on load), scored with rankrm's default input format,
    the inputs TRL and `pipeline` give it. A tokenizer without a pad token pads with eos, as RewardBench's
    runner does. `device` / `dtype` as in `load_reward_model`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    d = Path(model_dir).expanduser()
    if not (d / "config.json").is_file():
        raise RankrmError(f"{d} is not a transformers model dir (no config.json)")
    dev, dtype = placement(device, dtype)
    hf_logging.disable_progress_bar()
    try:
        clf = AutoModelForSequenceClassification.from_pretrained(d, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(d)
    except (OSError, ValueError) as e:
        raise RankrmError(f"could not load the model in {d}: {str(e).strip().splitlines()[0]}") from e
    if clf.config.num_labels != 1:
        raise RankrmError(f"{d} has {clf.config.num_labels} labels; a reward model has 1")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(clf.config, "pad_token_id", None) is None:  # a decoder classifier finds its last token by it
        clf.config.pad_token_id = tokenizer.pad_token_id
    model = ClassifierScores(clf).requires_grad_(False)
    return LoadedRewardModel(model.to(dev, dtype).eval(), tokenizer, DEFAULT_FORMAT, {}, d)


def score_lists(
    rm: LoadedRewardModel, lists: Sequence[RankedList], batch_size: int = 16, max_length: int | None = None
) -> list[list[float]]:
    """The score of every response of every list (normalised when the model has a reward norm). Sequences
    longer than `max_length` (default: the tokenizer's limit) lose prompt tokens first, as training's
    `overlong=truncate` does."""
    from rankrm.data.collate import RankCollator
    from rankrm.data.tokenize import EncodedList, effective_max_length, encode_lists

    tok = rm.tokenizer
    limit = effective_max_length(tok, max_length)
    encoded, counts = encode_lists(tok, list(lists), limit, overlong="truncate", fmt=rm.input_format)
    if counts.get("overlong_filtered"):
        raise RankrmError(
            f"{counts['overlong_filtered']} list(s) cannot fit in {limit} tokens even with the prompt cut"
        )
    ids = [x for el in encoded for x in el.ids]  # N sequences, row-major over lists
    types = None if not encoded or encoded[0].type_ids is None else [t for el in encoded for t in el.type_ids]
    order = sorted(range(len(ids)), key=lambda n: len(ids[n]))  # similar lengths share a batch
    collate = RankCollator(tok.pad_token_id, tok.padding_side)
    flat = [0.0] * len(ids)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            # One pseudo-list of all the batch's sequences: the collator pads them as in training.
            types_b = None if types is None else [types[n] for n in idx]
            batch = collate([EncodedList([ids[n] for n in idx], types_b, tuple(0.0 for _ in idx))])
            inputs = {k: v.to(rm.device) for k, v in batch.items() if k not in ("labels", "mask")}
            for n, s in zip(idx, rm.model(**inputs).float().tolist()):
                flat[n] = s
    out, pos = [], 0
    for el in encoded:
        out.append(flat[pos : pos + el.k])
        pos += el.k
    return out


def score_stats(scores: Sequence[float]) -> dict[str, float]:
    """n, mean, std (unbiased, as the val statistics in rankrm.json), min and max of `scores`."""
    s = torch.tensor(list(scores), dtype=torch.float32)  # (N,)
    if len(s) < 2:
        raise RankrmError(f"reward statistics need at least 2 scores, got {len(s)}")
    return {"n": len(s), "mean": s.mean().item(), "std": s.std().item(), "min": s.min().item(), "max": s.max().item()}


class RewardFunction:
    """`f(prompts, completions, **kwargs) -> list[float]`, TRL's reward-function signature (GRPOTrainer,
    RLOOTrainer `reward_funcs`): prompts are strings or message lists, completions strings or one assistant
    message each; every (prompt, completion) is scored as `rankrm.score` scores it. Not an `nn.Module`, so
    TRL calls it with the texts instead of tokenising them itself."""

    def __init__(self, rm: LoadedRewardModel, batch_size: int = 32, max_length: int | None = None) -> None:
        if batch_size < 1:
            raise RankrmError(f"batch_size must be >= 1, got {batch_size}")
        self.rm, self.batch_size, self.max_length = rm, batch_size, max_length
        self.__name__ = f"rankrm_{rm.path.name}"  # TRL logs rewards/<__name__>/mean

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise RankrmError(f"{len(prompts)} prompts but {len(completions)} completions")
        lists = [
            RankedList((completion_text(c, f"completion {i}"),), (0.0,), as_prompt(p), f"completion {i}")
            for i, (p, c) in enumerate(zip(prompts, completions))
        ]
        return [s[0] for s in score_lists(self.rm, lists, self.batch_size, self.max_length)]


def reward_function(
    model_dir: str | Path,
    device: str | torch.device | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    dtype: torch.dtype | None = None,
) -> RewardFunction:
    """A TRL reward function scoring with the export in `model_dir`, exactly as training and `rankrm.score` do.
    `device`: default a GPU when there is one (bf16 there, fp32 on CPU; `dtype` overrides)."""
    return RewardFunction(load_reward_model(model_dir, device, dtype), batch_size, max_length)
