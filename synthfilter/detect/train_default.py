"""Rebuild the shipped default model from the shared data files, with a fixed seed:
``python -m synthfilter.detect.train_default [--data-dir DIR] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from synthfilter.detect.train import train_command

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "detector"
DEFAULT_OUT = REPO / "models" / "default"
MODEL_ID = "synthfilter-default-en@3"
SEED = 20240917

SOURCES = [
    {"source": "baoguangsheng/fast-detect-gpt", "licence": "MIT",
     "content": "XSum news, SQuAD Wikipedia, WritingPrompts stories, PubMedQA; GPT-2-XL, OPT-2.7B, GPT-Neo-2.7B, "
                "GPT-J-6B, GPT-NeoX-20B, text-davinci-003, GPT-3.5-turbo, GPT-4"},
    {"source": "Jihuai-wpy/SeqXGPT", "licence": "Apache-2.0",
     "content": "news, web and arXiv text; GPT-2-XL, GPT-Neo, GPT-J, LLaMA-7B, GPT-3.5"},
    {"source": "L2R 'Learning to Rewrite' data (copy in scott-matkosky/AI_Text_Detector, L2R_dataset/)",
     "licence": "CC BY 3.0",
     "attribution": "Learning to Rewrite (L2R) dataset, redistributed in scott-matkosky/AI_Text_Detector; "
                    "licensed CC BY 3.0 (https://creativecommons.org/licenses/by/3.0/)",
     "content": "18 domains; GPT-3.5-turbo, GPT-4o, LLaMA-3-70B rewrites of human texts"},
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    code = train_command(
        [args.data_dir / "train.jsonl"], args.out, val=[args.data_dir / "validation.jsonl"], seed=SEED,
        quiet=args.quiet, model_id=MODEL_ID, sources=SOURCES, group_by=("domain", "generator", "source"),
        balance_by="source", overwrite=True,
    )
    gitkeep = args.out / ".gitkeep"
    if code == 0 and gitkeep.exists():
        gitkeep.unlink()
    return code


if __name__ == "__main__":
    sys.exit(main())
