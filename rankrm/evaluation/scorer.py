"""The model side of an evaluation: MODEL -> a `rankrm.reward.LoadedRewardModel`, scored with
`rankrm.reward.score_lists` (the one home of "score as training did", with the recorded input format).

MODEL may be:
- a rankrm export dir (has rankrm.json): `rankrm.reward.load_reward_model`;
- any other local `AutoModelForSequenceClassification` dir with one label (a third-party RM):
  `rankrm.reward.load_classifier`;
- a run dir (`<run>/model` when exported, else its best checkpoint);
- a `.ckpt` of a run: the model is rebuilt from `<run>/.hydra/config.yaml` (`build_reward_model`), its
  weights loaded with `rankrm.module.load_weights`, and its input format is the run's `data.prompt_joiner`;
- a hub id: fetched (or taken from the HF cache offline) with `huggingface_hub.snapshot_download`.
Speed: `score_lists` (no grad, sequences sorted by length); here lists go in chunks of about `chunk`
responses, shortest first, only so a progress bar can advance.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from rankrm.data.records import RankedList
from rankrm.errors import RankrmError
from rankrm.inputs import InputFormat
from rankrm.model import RewardModel
from rankrm.reward import LoadedRewardModel, load_classifier, load_reward_model, placement, score_lists

HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]  # no pickled weights
DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}  # --dtype; auto: bf16 on a GPU


def pick_device(device: str) -> torch.device | None:
    """`auto`: None (rankrm.reward's default: the GPU when there is one)."""
    if device == "auto":
        return None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RankrmError(f"--device {device}: no CUDA device here (use --device cpu)")
    return torch.device(device)


def in_memory(model: RewardModel, tokenizer: Any, fmt: InputFormat, where: Path) -> LoadedRewardModel:
    """A `RewardModel` in memory (a rebuilt checkpoint, or the model `rankrm.train` just trained), scored
    where its weights are, in their dtype."""
    model.eval()
    return LoadedRewardModel(model, tokenizer, fmt, {}, where)


def _checkpoint(ckpt: Path, device: torch.device | None, dtype: torch.dtype | None) -> LoadedRewardModel:
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
    dev, dtype = placement(device, dtype)  # as load_reward_model
    joiner = cfg.data.get("prompt_joiner")  # what the run trained with; a run from before the setting: legacy
    fmt = InputFormat.from_metadata({}) if joiner is None else InputFormat(joiner=joiner)
    return in_memory(module.model.requires_grad_(False).to(dev, dtype), tokenizer, fmt, ckpt)


def _run_dir_model(run: Path) -> Path:
    if (run / "model" / "rankrm.json").is_file():
        return run / "model"
    best = sorted((run / "checkpoints").glob("best-*.ckpt")) or sorted((run / "checkpoints").glob("*.ckpt"))
    if not best:
        raise RankrmError(f"{run}: a run dir without model/ or checkpoints/*.ckpt")
    return best[-1]


def _model_dir(path: Path, device: torch.device | None, dtype: torch.dtype | None) -> LoadedRewardModel:
    if (path / "rankrm.json").is_file():
        return load_reward_model(path, device, dtype)
    return load_classifier(path, device, dtype)


def load(name: str, device: str = "auto", dtype: str = "auto") -> LoadedRewardModel:
    """MODEL (see the module docstring) -> a loaded model; a bad MODEL is one RankrmError line."""
    dev, dt = pick_device(device), DTYPES[dtype]
    path = Path(name).expanduser()
    if path.is_dir() and (path / ".hydra" / "config.yaml").is_file():
        path = _run_dir_model(path)
    if path.is_file() and path.suffix == ".ckpt":
        return _checkpoint(path, dev, dt)
    if path.is_dir():
        return _model_dir(path, dev, dt)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise RankrmError(f"{name}: not a model dir, a run dir, a .ckpt or a hub id (owner/name)")
    return _model_dir(Path(_hub(name)), dev, dt)


def _hub(repo: str) -> str:
    """A hub model's files (safetensors, config, tokenizer), from the HF cache when offline."""
    from huggingface_hub import snapshot_download

    from rankrm.locate import loading

    with loading(repo):
        return snapshot_download(repo, allow_patterns=HUB_FILES)


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


def score(
    rm: LoadedRewardModel,
    lists: Sequence[RankedList],
    batch_size: int = 32,
    max_length: int | None = None,
    progress: bool | None = None,
    chunk: int = 512,
) -> list[list[float]]:
    """Rewards of every response of every list, in input order (`progress`: None = on a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    def size(i: int) -> int:
        return max(len(r) for r in lists[i].responses) + len(str(lists[i].prompt or ""))

    order = sorted(range(len(lists)), key=size)  # similar lengths share a chunk, and so a batch
    out: list[list[float]] = [[] for _ in lists]
    show = sys.stderr.isatty() if progress is None else progress
    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not show) as bar:
        task = bar.add_task("scoring", total=sum(rl.k for rl in lists))
        for idx, n in _chunks(order, lists, chunk):
            for i, s in zip(idx, score_lists(rm, [lists[i] for i in idx], batch_size, max_length)):
                out[i] = s
            bar.advance(task, n)
    return out
