"""`python -m witcurate.trainer --data 'shards/{00000..00003}.tar' --model witcurate-tiny
--epochs N --batch-size B --out RUN [--eval-dir DIR] [--resume]`, and the same under
`torchrun --nproc_per_node=8 -m witcurate.trainer ...`.

Every TrainArgs field is a flag (`--warmup-steps`, `--precision`, ...), typed from the dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from witcurate.errors import UserError
from witcurate.trainer.train import TrainArgs, train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m witcurate.trainer",
                                description="Train an open_clip model on WebDataset shards.")
    p.add_argument("--data", required=True, help="shards: brace pattern, glob, directory or '::' list")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl, model.pt)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    hints = typing.get_type_hints(TrainArgs)
    for f in dataclasses.fields(TrainArgs):
        flag = "--" + f.name.replace("_", "-")
        typ = hints[f.name]
        if typ is bool:
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, dest=f.name, type=typ, default=f.default, help=f"(default: {f.default})")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    args = TrainArgs(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(TrainArgs)})
    try:
        metrics = train(args, ns.data, ns.out, resume=ns.resume)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from witcurate.trainer.distributed import cleanup, env_info
    if env_info().is_main:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    cleanup(env_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
