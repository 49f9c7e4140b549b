"""Build the tiny WordPiece tokenizer shipped in `rankrm/assets/tiny_tokenizer/` (run once).

    python scripts/make_tiny_tokenizer.py [--vader-dir DIR] [--out rankrm/assets/tiny_tokenizer]

VADER: `--vader-dir`, else $RANKRM_VADER_DIR, else $RANKRM_DATA_DIR/vader-human-sentiment, else the
user cache (fetched once from PyPI).

Trains two ~1000-token tokenizers on the English VADER sentences (MIT, `*_GroundTruth.txt`,
third column) plus the Chinese sentences below (written for this script, public domain):

- `encoder/`: uncased WordPiece, BERT-style (`[CLS] a [SEP] b [SEP]`, token_type_ids), for
  `tiny_bert` / `tiny_ernie`;
- `decoder/`: byte-level BPE built exactly like `Qwen2Tokenizer` (NFC, Qwen2 split regex,
  ByteLevel), pad `<|endoftext|>`, eos `<|im_end|>`, a minimal ChatML chat template, for
  `tiny_qwen`. It must match Qwen2Tokenizer: transformers 5 always loads a dir whose
  config.json says qwen2 (an exported model) with Qwen2Tokenizer, which rebuilds the
  tokenizer from the vocab and merges, so a WordPiece vocabulary would come back garbled.

Training is not deterministic run to run, so the output is committed; re-running this
script changes the tiny models (their vocab size comes from it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import bench_common  # a sibling module: `python scripts/x.py` puts scripts/ on the path
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from rankrm.data.vader import DOMAINS, locate

VOCAB_SIZE = 1000
ENCODER_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
DECODER_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # as in Qwen2.5-Instruct
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHINESE = """\
这家餐厅的菜很好吃，服务也很热情，我们下次还会再来。
味道一般，价格太贵了，不推荐。
环境干净，上菜很快，老板人很好。
等了一个小时才上菜，服务员态度很差，非常失望。
这本书写得非常精彩，我一口气读完了。
电影的故事很无聊，演员的表演也不自然。
今天天气很好，我们去公园散步，心情特别愉快。
手机的质量不错，电池可以用两天，屏幕也很清楚。
快递太慢了，包装也破了，东西还少了一个。
这个问题的回答很有帮助，解释得清楚又详细。
回答完全没有解决我的问题，而且说的都是错的。
谢谢你的帮助，我明白了。
请问这个房间有没有窗户？离地铁站远不远？
床前明月光，疑是地上霜。举头望明月，低头思故乡。
白日依山尽，黄河入海流。欲穷千里目，更上一层楼。
春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。
学而时习之，不亦说乎？有朋自远方来，不亦乐乎？
一二三四五六七八九十百千万元块钱年月日时分点人大小多少好坏高低长短新旧
"""


def corpus(vader_dir: Path) -> list[str]:
    """English VADER sentences (3rd tab field) + the Chinese lines above, repeated so they count."""
    texts: list[str] = []
    for f in sorted(vader_dir.glob("*_GroundTruth.txt")):
        for line in f.read_text(encoding="utf-8-sig", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                texts.append(parts[2])
    if not texts:
        raise SystemExit(f"no *_GroundTruth.txt sentences under {vader_dir}")
    # The repeats make the Chinese characters frequent enough to get their own tokens
    # next to ~23k English sentences.
    return texts + CHINESE.splitlines() * 50


def train_encoder(texts: list[str]) -> Tokenizer:
    """Uncased BERT-style WordPiece of VOCAB_SIZE tokens, specials first ([PAD] = 0)."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=ENCODER_SPECIAL, limit_alphabet=600)
    tok.train_from_iterator(texts, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tok


def save_encoder(tok: Tokenizer, out: Path) -> None:
    # transformers 5: special tokens and model_input_names must be given explicitly,
    # otherwise they are unset and token_type_ids are dropped (STACK-NOTES).
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        padding_side="right",
        model_max_length=512,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    hf.save_pretrained(out)


def train_decoder(texts: list[str]) -> Tokenizer:
    """Byte-level BPE with Qwen2Tokenizer's normalizer and pre-tokenizer (specials first)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=DECODER_SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_decoder(tok: Tokenizer, out: Path) -> None:
    """Through Qwen2Tokenizer itself, so a reload (which rebuilds from vocab + merges) is identical."""
    model = json.loads(tok.to_str())["model"]
    hf = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>"],
        padding_side="right",
        model_max_length=512,
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vader-dir", help="VADER dir (default: as the benchmarks find it, see bench_common.vader_dir)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "rankrm/assets/tiny_tokenizer")
    args = ap.parse_args()
    texts = corpus(locate(bench_common.vader_dir(args.vader_dir), list(DOMAINS)))
    save_encoder(train_encoder(texts), args.out / "encoder")
    save_decoder(train_decoder(texts), args.out / "decoder")
    print(f"wrote {args.out}/encoder and {args.out}/decoder")


if __name__ == "__main__":
    main()
