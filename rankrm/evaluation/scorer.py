"""The model side of an evaluation: load any reward model, and score lists through ONE function.

`score(model, lists)` is the only place an evaluation turns (prompt, response) into rewards. Today
it goes through `rankrm.score.score_lists` (the tokenisation of training, `rankrm.data.tokenize`);
when `rankrm.reward_function` (issue 15) becomes the home of "how a (prompt, response) becomes model
input", this function is what moves to it.

MODEL may be:
- a rankrm export dir or any local `AutoModelForSequenceClassification` dir with one label (a
  third-party RM; safetensors only): `rankrm.score.load_exported`;
- a run dir (`<run>/model` when exported, else its best checkpoint);
- a `.ckpt` of a run: the model is rebuilt from `<run>/.hydra/config.yaml` (`build_reward_model`)
  and its weights loaded with `rankrm.module.load_weights`;
- a hub id: fetched (or taken from the HF cache offline) with `huggingface_hub.snapshot_download`.
Speed: no grad; lists sorted by length and scored in chunks so a batch holds similar lengths;
bf16 autocast (and bf16 weights for a loaded model) on a GPU; a progress bar on a terminal.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from rankrm.data.records import RankedList
from rankrm.errors import RankrmError

HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]  # no pickled weights


@dataclass
class Loaded:
    """A reward model ready to score: `forward(**batch) -> (N,)` rewards (norm applied), its tokenizer."""

    name: str
    kind: str  # export | transformers | checkpoint
    forward: Callable[..., torch.Tensor]
    tokenizer: Any
    device: torch.device
    autocast: torch.dtype | None  # bf16 on a GPU


def pick_device(device: str) -> torch.device:
    """`auto`: the GPU when there is one."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RankrmError(f"--device {device}: no CUDA device here (use --device cpu)")
    return torch.device(device)


def _autocast(device: torch.device, dtype: str) -> torch.dtype | None:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"float32": None, "bfloat16": torch.bfloat16}[dtype]


def _transformers(path: str, name: str, kind: str, device: torch.device, autocast: torch.dtype | None) -> Loaded:
    from rankrm.export import hf_scores
    from rankrm.score import load_exported

    model, tokenizer = load_exported(path)
    if tokenizer.pad_token_id is None:  # RewardBench's rule for RMs without one: pad with eos
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model = model.to(device, dtype=autocast) if autocast else model.to(device)

    def forward(**batch: torch.Tensor) -> torch.Tensor:
        return hf_scores(model, {k: v.to(device) for k, v in batch.items()})

    return Loaded(name, kind, forward, tokenizer, device, autocast)


def from_reward_model(model: torch.nn.Module, tokenizer: Any, name: str, kind: str, dtype: str = "auto") -> Loaded:
    """A `RewardModel` (in memory: a rebuilt checkpoint, or the model `rankrm.train` just trained), scored
    where its weights are; `dtype` as `--dtype` (auto: bf16 autocast on a GPU, the weights untouched)."""
    device = next(model.parameters()).device
    model.eval()

    def forward(**batch: torch.Tensor) -> torch.Tensor:
        b = {k: v.to(device) for k, v in batch.items()}
        return model(b["input_ids"], b["attention_mask"], b.get("token_type_ids"))

    return Loaded(name, kind, forward, tokenizer, device, _autocast(device, dtype))


def _checkpoint(ckpt: Path, device: torch.device, dtype: str) -> Loaded:
    from omegaconf import OmegaConf

    from rankrm.backbones import build_reward_model
    from rankrm.module import RankRMModule, load_weights

    cfg_path = ckpt.parent.parent / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise RankrmError(f"{ckpt}: rebuilding its model needs the run's config, not found at {cfg_path}")
    cfg = OmegaConf.load(cfg_path)
    model, tokenizer = build_reward_model(cfg.backbone)
    module = RankRMModule(model, cfg.loss.name, {}, optimizer=None)  # the checkpoint's own structure
    try:
        load_weights(module, str(ckpt))
    except (RuntimeError, OSError, KeyError) as e:
        raise RankrmError(f"{ckpt}: not a checkpoint of this run's model ({str(e).splitlines()[0]})") from None
    return from_reward_model(module.model.to(device), tokenizer, str(ckpt), "checkpoint", dtype)


def _run_dir_model(run: Path) -> Path:
    if (run / "model" / "config.json").is_file():
        return run / "model"
    best = sorted((run / "checkpoints").glob("best-*.ckpt")) or sorted((run / "checkpoints").glob("*.ckpt"))
    if not best:
        raise RankrmError(f"{run}: a run dir without model/ or checkpoints/*.ckpt")
    return best[-1]


def load(name: str, device: str = "auto", dtype: str = "auto") -> Loaded:
    """MODEL (see the module docstring) -> `Loaded`; a bad MODEL is one RankrmError line."""
    dev = pick_device(device)
    autocast = _autocast(dev, dtype)
    path = Path(name).expanduser()
    if path.is_dir() and (path / ".hydra" / "config.yaml").is_file():
        path = _run_dir_model(path)
    if path.is_file() and path.suffix == ".ckpt":
        return _checkpoint(path, dev, dtype)
    if path.is_dir():
        kind = "export" if (path / "rankrm.json").is_file() else "transformers"
        return _transformers(str(path), name, kind, dev, autocast)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise RankrmError(f"{name}: not a model dir, a run dir, a .ckpt or a hub id (owner/name)")
    return _transformers(_hub(name), name, "transformers", dev, autocast)


def _hub(repo: str) -> str:
    """A hub model's files (safetensors, config, tokenizer), from the HF cache when offline."""
    from huggingface_hub import snapshot_download

    from rankrm.locate import loading

    with loading(repo):
        return snapshot_download(repo, allow_patterns=HUB_FILES)


class _AsClassifier:
    """What `rankrm.score.score_lists` calls: `model(**batch).logits` (N, 1), and a `config` without a stored
    norm (the forward already applies it)."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded, self.config = loaded, SimpleNamespace()

    def __call__(self, **batch: torch.Tensor) -> Any:
        dtype = self.loaded.autocast
        with torch.autocast(self.loaded.device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            rewards = self.loaded.forward(**batch)
        return SimpleNamespace(logits=rewards.float().cpu().unsqueeze(-1))  # fp32 out; bf16 rounding makes ties


def _chunks(order: Sequence[int], lists: Sequence[RankedList], size: int) -> Iterator[tuple[list[int], int]]:
    """Consecutive runs of `order` holding about `size` responses: (list indices, responses)."""
    idx, n = [], 0
    for i in order:
        idx.append(i)
        n += lists[i].k
        if n >= size:
            yield idx, n
            idx, n = [], 0
    if idx:
        yield idx, n


@torch.no_grad()
def score(
    loaded: Loaded,
    lists: Sequence[RankedList],
    batch_size: int = 32,
    max_length: int | None = None,
    progress: bool | None = None,
    chunk: int = 512,
) -> list[list[float]]:
    """Rewards of every response of every list, in input order (`progress`: None = on a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rankrm.score import score_lists

    def size(i: int) -> int:
        return max(len(r) for r in lists[i].responses) + len(str(lists[i].prompt or ""))

    order = sorted(range(len(lists)), key=size)  # similar lengths share a chunk, and so a batch
    out: list[list[float]] = [[] for _ in lists]
    clf = _AsClassifier(loaded)
    show = sys.stderr.isatty() if progress is None else progress
    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not show) as bar:
        task = bar.add_task("scoring", total=sum(rl.k for rl in lists))
        for idx, n in _chunks(order, lists, chunk):
            for i, s in zip(idx, score_lists(clf, loaded.tokenizer, [lists[i] for i in idx], batch_size, max_length)):
                out[i] = s
            bar.advance(task, n)
    return out
