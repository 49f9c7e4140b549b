"""The schema of the training loop's groups: `optimizer`, `scheduler`, `trainer`, `callbacks`, `logger`.

Each is a mapping that `hydra.utils.instantiate` builds from its `_target_`; a known target's fields
are typed here (an unknown target's keys are checked against its parameters). `Scheduler` and
`Trainer` hold their groups' defaults (registered as `scheduler/base`, `trainer/base`); the other
groups' values, and what they do, are in their yaml (conf/optimizer/adamw.yaml, conf/callbacks/,
conf/logger/): there the schema only types them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from rankrm.config.types import Count, Fraction, Natural, Probability, Range, Schema, Target, target
from rankrm.errors import RankrmError

Batches = Fraction | Natural | None  # Lightning's limit_*_batches: a fraction of the batches, or a number of them
Decay = Literal["linear", "cosine", "constant"]
# Lightning 2.x names (tests/test_config.py checks them against the installed Lightning's registries).
Accelerator = Literal["cpu", "gpu", "cuda", "mps", "tpu", "auto"]
Strategy = Literal[
    "auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook",
    "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true",
    "ddp_spawn_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true",
    "ddp_fork_find_unused_parameters_false", "ddp_fork_find_unused_parameters_true",
    "ddp_notebook_find_unused_parameters_false", "ddp_notebook_find_unused_parameters_true",
    "fsdp", "fsdp_cpu_offload", "deepspeed", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload",
    "deepspeed_stage_3", "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme",
    "single_device", "single_tpu", "single_xla", "xla", "xla_debug",
]  # fmt: skip
Precision = Literal[
    "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine",
    "transformer-engine-float16", "64", "32", "16", "bf16", 64, 32, 16,
]  # fmt: skip


# ---- optimizer and scheduler ---------------------------------------------------------------------


@target("torch.optim.AdamW", "torch.optim.adamw.AdamW")
@dataclass
class AdamW(Schema):
    """torch.optim.AdamW (values and what they do: conf/optimizer/adamw.yaml); other keys: its parameters."""

    extra = "target"
    _target_: str
    _partial_: bool  # true: the module passes params=...
    lr: Annotated[float, Range(lo=0)]
    weight_decay: Annotated[float, Range(lo=0)]
    betas: tuple[Probability, Probability]
    eps: Annotated[float, Range(lo=0)]
    amsgrad: bool
    fused: bool | None


@target("rankrm.schedules.warmup_decay")
@dataclass
class Scheduler(Schema):
    extra = "target"
    # linear warmup to optimizer.lr, then `decay` (rankrm/schedules.py)
    _target_: str = "rankrm.schedules.warmup_decay"
    # the module passes optimizer and total_steps
    _partial_: bool = True
    # share of all training steps spent warming up
    warmup_ratio: Fraction = 0.1
    # after warmup: linear (to 0 at the last step, BERT/InstructGPT style) | cosine (to 0) | constant
    decay: Decay = "linear"


# ---- trainer -------------------------------------------------------------------------------------


@target("lightning.pytorch.Trainer")
@dataclass
class Trainer(Schema):
    """The defaults: one process on the CPU (conf/trainer/cpu.yaml). Other keys: Lightning Trainer arguments."""

    extra = "target"
    _target_: str = "lightning.pytorch.Trainer"
    # cpu | gpu | auto | ...
    accelerator: Accelerator = "cpu"
    # processes (cpu) or GPUs per node; -1 = all
    devices: Annotated[int, Range(lo=-1)] | str | list[int] = 1
    # machines; multi-node needs the launcher env (torchrun / SLURM), see README
    num_nodes: Count = 1
    # auto | ddp | ddp_spawn | fsdp | ... (or a strategy object's config with a _target_)
    strategy: Strategy | Target = "auto"
    # rankrm's list batch sampler shards batches across ranks itself
    use_distributed_sampler: bool = False
    # 32-true | bf16-mixed | 16-mixed (GPU) | ...
    precision: Precision = "32-true"
    # passes over the training lists (-1: no limit)
    max_epochs: Annotated[int, Range(lo=-1)] | None = 1
    # stop after this many optimizer steps (-1: no limit)
    max_steps: Annotated[int, Range(lo=-1)] = -1
    # batches per optimizer step
    accumulate_grad_batches: Count = 1
    # clip the global grad norm (null: off)
    gradient_clip_val: Annotated[float, Range(lo=0)] | None = 1.0
    # validate every epoch (1.0), a fraction of one, or every N train batches (an integer)
    val_check_interval: Fraction | Count | None = 1.0
    # validate every N epochs
    check_val_every_n_epoch: Count | None = 1
    # cap on train batches per epoch (an integer, or a fraction; null: all)
    limit_train_batches: Batches = None
    # cap on val batches (null: all)
    limit_val_batches: Batches = None
    # cap on test batches (null: all)
    limit_test_batches: Batches = None
    # train/loss logging period
    log_every_n_steps: Count = 10
    # 0 skips the sanity check: validation at epoch end covers it
    num_sanity_val_steps: Annotated[int, Range(lo=-1)] = 0
    # true: deterministic torch kernels (reproducible to the bit on CPU)
    deterministic: Literal[True, False, "warn"] = False
    # the run prints its own parameter counts
    enable_model_summary: bool = False

    @classmethod
    def rules(cls, cfg: Any, key: str) -> None:
        if str(cfg.get("strategy", "auto")).startswith("fsdp") and cfg.get("accelerator") == "cpu":
            raise RankrmError(
                f"{key}.strategy=fsdp runs on GPUs only (Lightning refuses FSDP on CPU): "
                "use trainer=ddp for several CPU processes"
            )


# ---- callbacks and loggers (entries: name -> a target, or null to switch it off) --------------------


@target("lightning.pytorch.callbacks.ModelCheckpoint")
@dataclass
class ModelCheckpoint(Schema):
    """Lightning's ModelCheckpoint (values: conf/callbacks/default.yaml); other keys: its parameters."""

    extra = "target"
    _target_: str
    dirpath: str | None
    filename: str | None
    monitor: str | None
    mode: Literal["min", "max"]
    save_top_k: Annotated[int, Range(lo=-1)]
    save_last: bool | Literal["link"] | None
    every_n_train_steps: Natural | None
    every_n_epochs: Natural | None
    save_weights_only: bool
    auto_insert_metric_name: bool
    enable_version_counter: bool
    verbose: bool


@target("lightning.pytorch.callbacks.EarlyStopping")
@dataclass
class EarlyStopping(Schema):
    """Lightning's EarlyStopping (values: conf/callbacks/early_stopping.yaml); other keys: its parameters."""

    extra = "target"
    _target_: str
    monitor: str
    mode: Literal["min", "max"]
    patience: Natural
    min_delta: float
    verbose: bool


@target("lightning.pytorch.callbacks.RichProgressBar", "lightning.pytorch.callbacks.TQDMProgressBar")
@dataclass
class ProgressBar(Schema):
    extra = "target"
    _target_: str
    leave: bool
    refresh_rate: Natural


@target("lightning.pytorch.loggers.CSVLogger", "lightning.pytorch.loggers.TensorBoardLogger")
@dataclass
class Logger(Schema):
    """Lightning's CSV / TensorBoard loggers (values: conf/logger/); other keys: their parameters."""

    extra = "target"
    _target_: str
    save_dir: str
    name: str | None
    version: str | Natural | None
    prefix: str
