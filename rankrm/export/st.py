"""RewardModel -> a sentence-transformers model, for poolings transformers has no head class for (`mean`,
`cls`, and `last_token` on a model type whose transformers head is not a decoder's `score`).

The model is Transformer (the backbone and tokenizer, in `0_Transformer/`) -> Pooling (`mean` / `cls` /
`lasttoken`, sentence_transformers/sentence_transformer/modules/pooling.py: a masked mean, token 0 and
the last real token by the attention mask, as `RewardModel._pool`) -> Dense(hidden, 1) with an identity
activation (sentence_transformers/base/modules/dense.py loads a `torch.` activation class without remote
code). `SentenceTransformer(dir).encode(texts)` returns the (N, 1) rewards; text prompts go in as
`(prompt, response)` tuples, which the Transformer module tokenises as a text pair, as training does.
The reward norm is folded into the Dense layer (w / std, (b - mean) / std): every consumer sees normalised
scores. rankrm reads such an export back without sentence-transformers (`load_parts`).

The backbone is not saved at the root (sentence-transformers' default) on purpose: the root then has no
config.json, so transformers, TRL and vLLM refuse the dir instead of loading the backbone with a random
`...ForSequenceClassification` head (what they do with a root-saved BertModel) and scoring silently wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from rankrm.errors import RankrmError
from rankrm.model import RewardModel

ST_POOLING = {"mean": "mean", "cls": "cls", "last_token": "lasttoken"}  # rankrm pooling -> sentence-transformers'
BACKBONE_DIR = "0_Transformer"


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("sentence_transformers") is not None


def _save_backbone(model: RewardModel, tokenizer: Any, out: Path) -> None:
    """The backbone as a plain AutoModel dir. A BERT-style model's pooler (dropped for these poolings, it is
    unused) is saved as zeros, so loading the dir with AutoModel reports no missing weights."""
    from transformers import AutoModel

    base = model.base_model
    full = AutoModel.from_config(base.config, dtype=next(base.parameters()).dtype)
    missing, unexpected = full.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise RankrmError(f"cannot export {type(base).__name__}: its weights do not fit AutoModel ({missing[:3]})")
    with torch.no_grad():
        for name in missing:
            full.get_parameter(name).zero_()
    full.save_pretrained(out)
    tokenizer.save_pretrained(out)


class STExport:
    """The in-memory sentence-transformers model of an export: what it scores, and writing it."""

    kind = "sentence_transformers"
    backbone_dir = BACKBONE_DIR
    head = "dense"
    folded = True
    hf_class = "SentenceTransformer"

    def __init__(self, model: RewardModel, tokenizer: Any, out: Path) -> None:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.models import Dense, Pooling, Transformer

        _save_backbone(model, tokenizer, out / BACKBONE_DIR)
        transformer = Transformer(str(out / BACKBONE_DIR))
        transformer.save_in_root = False  # saved as modules.json's "0_Transformer" (see the module docstring)
        dim = transformer.get_embedding_dimension()
        pooling = Pooling(dim, pooling_mode=ST_POOLING[model.pooling])
        dense = Dense(dim, 1, bias=True, activation_function=nn.Identity())
        mean, std = model.reward_norm
        with torch.no_grad():
            bias = model.head.bias.detach() if model.head.bias is not None else torch.zeros(1)
            dense.linear.weight.copy_(model.head.weight.detach() / std)  # (1, H)
            dense.linear.bias.copy_((bias - mean) / std)
        self.st = SentenceTransformer(modules=[transformer, pooling, dense], device="cpu").eval()

    def scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """What `SentenceTransformer.encode` computes for these features: (N, 1) -> (N,)."""
        return self.st(dict(batch))["sentence_embedding"][:, 0]

    def save(self, out: Path) -> None:
        self.st.save(str(out))


def load_parts(model_dir: Path, dtype: torch.dtype) -> tuple[nn.Module, nn.Linear]:
    """(backbone, head) of a sentence-transformers export, read without sentence-transformers."""
    from transformers import AutoModel

    modules = json.loads((model_dir / "modules.json").read_text())
    dense = [m["path"] for m in modules if str(m.get("type", "")).endswith(".Dense")]
    if len(dense) != 1:
        raise RankrmError(f"{model_dir}/modules.json: expected one Dense module, found {len(dense)}")
    weights = load_file(str(model_dir / dense[0] / "model.safetensors"))
    head = nn.Linear(weights["linear.weight"].shape[1], 1, dtype=dtype)
    with torch.no_grad():
        head.weight.copy_(weights["linear.weight"])
        head.bias.copy_(weights["linear.bias"])
    base = AutoModel.from_pretrained(model_dir / BACKBONE_DIR, use_safetensors=True, dtype=dtype)
    return base, head
