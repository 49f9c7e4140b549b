"""On a CUDA GPU: packed rows give the scores and gradients of padded batches, for every attention kernel this
machine has (sdpa_varlen, sdpa, eager, flex_attention -- whose backward torch runs on GPUs only -- and
flash_attention_2 when flash-attn is installed). fp32 with TF32 off, tiny_qwen and tiny_bert, random lists
with chat and text prompts. Part of scripts/gpu_check.sh; the CPU kernels are tested in tests/test_packing.py.

    python scripts/gpu_packing_check.py --out scripts/results/gpu_packing_check.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import torch  # noqa: E402
from test_packing import random_lists, run_modes  # noqa: E402  (the CPU test's lists and forward/backward)

from rankrm.backbones import build_reward_model  # noqa: E402
from rankrm.config import load_option  # noqa: E402
from rankrm.data.collate import RankCollator  # noqa: E402
from rankrm.data.tokenize import encode_lists  # noqa: E402

TOL = 1e-4  # fp32 on a GPU: kernels sum in other orders than the padded path


def check(name: str, attn: str, packing: str, seed: int) -> dict[str, Any]:
    def build(**kw: Any) -> Any:
        cfg = load_option("backbone", name, "dropout=0.0")
        cfg.merge_with(kw)
        model, tok = build_reward_model(cfg)
        return model.cuda(), tok

    ref, tok = build()
    packed, _ = build(attn_implementation=attn, packing=packing)
    encoded, _ = encode_lists(tok, random_lists(seed, n=8), 24, overlong="truncate")
    batch = {k: v.cuda() for k, v in RankCollator(tok.pad_token_id, tok.padding_side)(encoded).items()}
    s0, g0, _ = run_modes(ref, batch, ("none",))["none"]
    start = time.perf_counter()
    s1, g1, tokens = run_modes(packed, batch, (packing,))[packing]
    torch.cuda.synchronize()
    score_diff = float((s0 - s1).abs().max())
    grad_diff = max(float((g0[k] - g1[k]).abs().max() / (1 + g0[k].abs().max())) for k in g0)
    return {
        "backbone": name,
        "attn_implementation": attn,
        "packing": packing,
        "seed": seed,
        "max_score_diff": score_diff,
        "max_grad_rel_diff": grad_diff,
        "ok": score_diff <= TOL and grad_diff <= TOL,
        "tokens_real": int(tokens.real),
        "tokens_padded": int(tokens.padded),
        "padded_tokens_of_none": int(batch["attention_mask"].numel() - batch["attention_mask"].sum()),
        "seconds": time.perf_counter() - start,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "scripts" / "results" / "gpu_packing_check.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible to torch")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    kernels = ["sdpa_varlen", "sdpa", "eager"]
    if importlib.util.find_spec("flash_attn") is not None:
        kernels.append("flash_attention_2")
    kernels.append("flex_attention")  # last: transformers compiles it (the slowest to start)
    rows = []
    for attn in kernels:
        for name, modes in (("tiny_qwen", ("lists", "shared_prompt")), ("tiny_bert", ("lists",))):
            for packing in modes:
                if attn.startswith("flash") and packing == "shared_prompt":
                    continue  # refused by design (varlen has no shared prefix)
                try:
                    rows.append(check(name, attn, packing, seed=0))
                except Exception as e:  # noqa: BLE001 -- record the failure, check the other kernels
                    rows.append(
                        {
                            "backbone": name,
                            "attn_implementation": attn,
                            "packing": packing,
                            "ok": False,
                            "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                        }
                    )
                print(json.dumps(rows[-1]), flush=True)
                payload = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": rows}
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")  # after every row: a timeout keeps them
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
