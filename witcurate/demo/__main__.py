"""Manual use: `python -m witcurate.demo generate|serve [--config configs/demo.yaml] [--root DIR]
[--port N]`. The `witcurate demo` subcommands call the same functions."""

from __future__ import annotations

import argparse
import sys

from witcurate.config import load_config
from witcurate.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m witcurate.demo")
    parser.add_argument("command", choices=("generate", "serve"))
    parser.add_argument("--config", default=None, help="YAML config (its demo section is used)")
    parser.add_argument("--root", default=None, help="demo world directory (default demo.root)")
    parser.add_argument("--port", type=int, default=None, help="image host port (default demo.port)")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config).demo
        if args.port is not None:
            cfg.port = args.port
        root = args.root or cfg.root
        if args.command == "generate":
            from witcurate.demo.world import generate_world
            generate_world(cfg, root, force=args.force)
        else:
            from witcurate.demo.host import serve_forever
            serve_forever(root, cfg.host, cfg.port)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
