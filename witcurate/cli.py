"""`witcurate`: one command, a subcommand per stage, `run` for all of them, `demo`, `audit`.

Each stage subcommand is built from the stage's own declarations (named inputs, options).
Arguments the CLI does not know are handed to Beam (`--runner DataflowRunner --project ...`)
after checking that Beam knows them. User errors print one line and exit 2.

Without `--config` a command means the built-in WIT defaults (the dataclass defaults in
config.py), wherever it runs: a YAML file in the working directory is never picked up by
chance. Every command that reads a config says on stderr which one is in force.
"""

from __future__ import annotations

import os

# Before anything imports torch: OpenMP threads that spin-wait collapse on shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import argparse  # noqa: E402
import atexit  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from typing import Sequence

from witcurate.config import Config, load_config  # noqa: E402
from witcurate.errors import UserError  # noqa: E402
from witcurate.pipeline import fs  # noqa: E402

BUILT_IN = "built-in defaults (WIT)"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="YAML config, e.g. configs/demo.yaml (default: the built-in WIT defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value; repeatable")
    parser.add_argument("--force", action="store_true", help="rerun even if a matching manifest exists")


def _load(args: argparse.Namespace, values: dict | None = None) -> Config:
    """--config's file, or the built-in defaults without one, then --set and option values."""
    config = load_config(args.config, list(args.overrides), values)
    print(config_line(args.config, len(args.overrides) + len(values or {})), file=sys.stderr)
    return config


def config_line(path: str | None, overrides: int) -> str:
    """`config: configs/demo.yaml + 2 overrides`: the one line that says which config is in force."""
    line = f"config: {path or BUILT_IN}"
    return line + (f" + {overrides} override{'s' if overrides != 1 else ''}" if overrides else "")


def check_beam_args(args: list[str]) -> list[str]:
    """Refuse arguments neither we nor Beam know, instead of silently ignoring a typo."""
    if not args:
        return args
    from apache_beam.options.pipeline_options import PipelineOptions
    known = set(PipelineOptions(args).get_all_options(retain_unknown_options=False))
    for arg in args:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            if name not in known:
                raise UserError(f"unknown option {arg.split('=', 1)[0]}",
                                "see `witcurate <command> --help`; Beam options are passed through")
    return args


def _add_stage_parsers(sub, command: str | None) -> None:
    """A subcommand per stage; only `command`'s is built from its class (importing it)."""
    from witcurate.pipeline.stages import ORDER, SUMMARIES, get_stage
    for name in ORDER:
        if name != command:
            sub.add_parser(name, help=SUMMARIES[name])
            continue
        stage = get_stage(name)
        p = sub.add_parser(name, help=stage.help, description=stage.help)
        for inp in stage.inputs:
            flag = "--in" if inp == "in" else f"--{inp.replace('_', '-')}"
            p.add_argument(flag, dest=f"input_{inp}", default=None, metavar="PATH",
                           help=f"input {inp!r} (default: its place in the run directory)")
        p.add_argument("--out", required=True, metavar="DIR",
                       help=f"this stage's output directory (in a full run: OUT/{name})")
        for opt in stage.options:
            if opt.type is bool:   # a switch: present means true
                p.add_argument(opt.flag, dest=f"opt_{opt.key}", action="store_const", const=True,
                               default=None, help=opt.help)
            else:
                p.add_argument(opt.flag, dest=f"opt_{opt.key}", type=opt.type, default=None, help=opt.help)
        _common(p)
        p.set_defaults(handler=_run_one_stage, stage_name=name)


def _run_one_stage(args: argparse.Namespace, beam_args: list[str]) -> int:
    from witcurate.pipeline.runner import describe, run_stage
    from witcurate.pipeline.stages import get_stage
    stage = get_stage(args.stage_name)
    values = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    config = _load(args, values)
    out_dir = args.out.rstrip("/")
    out_root = out_dir.rsplit("/", 1)[0] if "/" in out_dir else "."
    try:
        inputs = stage.default_inputs(config, out_root)
    except NotImplementedError:
        inputs = {}
    given = {inp: getattr(args, f"input_{inp}") for inp in stage.inputs if getattr(args, f"input_{inp}")}
    if "in" in given:  # an explicit --in replaces config-derived raw inputs (e.g. ingest sources)
        inputs = {k: v for k, v in inputs.items() if k in stage.inputs}
    inputs.update(given)
    with _maybe_host(config, args.stage_name, out_root):
        manifest = run_stage(stage, config, out_dir, inputs, beam_args + config.run.beam_args, force=args.force)
    print(f"{args.stage_name}: {describe(manifest)} -> {out_dir}")
    return 0


def _maybe_host(config: Config, stage_name: str, out_root: str):
    """The demo's image host while a demo run's download stage runs on its own."""
    if not (config.run.demo and stage_name == "download"):
        return contextlib.nullcontext()
    from witcurate.demo.hooks import DemoHooks
    return DemoHooks(config).running(out_root, print)


def _cmd_run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from witcurate.demo.hooks import demo_hooks
    from witcurate.pipeline.run import run_all
    config = _load(args)
    out = args.out or config.run.out
    stages = args.stages.split(",") if args.stages else None
    run_all(config, out, beam_args, stages=stages, force=args.force, hooks=demo_hooks(config))
    return 0


def _cmd_audit(args: argparse.Namespace, beam_args: list[str]) -> int:
    from witcurate.pipeline.audit import audit_run, format_table
    if not fs.exists(args.run_dir):
        raise UserError(f"run directory not found: {args.run_dir}", "pass the --out of a finished run")
    audits = audit_run(args.run_dir)
    if not audits:
        raise UserError(f"no finished stages under {args.run_dir}", "run `witcurate run` first")
    print(format_table(audits))
    bad = [a for a in audits if a.problems]
    print(f"\n{len(audits)} stages audited, {len(bad)} with problems")
    return 1 if bad else 0


def _cmd_browse(args: argparse.Namespace, beam_args: list[str]) -> int:
    from witcurate.browse.build import build_report
    from witcurate.browse.serve import serve
    report = build_report(args.run_dir, truth=args.truth)
    if args.serve:
        serve(report["path"], args.host, args.port)
    return 0


def _cmd_experiment(args: argparse.Namespace, beam_args: list[str]) -> int:
    from witcurate.trainer.experiment import run_experiment
    print(f"config: the run's own ({fs.join(args.run_dir, 'shards', 'manifest.json')})", file=sys.stderr)
    results = run_experiment(args.run_dir, seeds=args.seeds, steps=args.steps, eval_dir=args.eval,
                             batch_size=args.batch_size, device=args.device, default_config=args.default,
                             beam_args=beam_args)
    print(f"\nthe ablation, {results['steps']} steps x batch {results['batch_size']}, "
          f"{len(results['seeds'])} seed(s) each (mean ± std):\n{results['table']}\n"
          f"chosen: {results['chosen']['arm']}; the default ({results['default']['source']}): "
          f"{results['default']['arm']}")
    print(f"results: {results['results_path']}; table added to {fs.join(args.run_dir, 'shards', 'README.md')}")
    return 0


def _cmd_demo(args: argparse.Namespace, beam_args: list[str]) -> int:
    config = _load(args)
    root = args.root or config.demo.root
    if args.action == "generate":
        from witcurate.demo.world import generate_world
        world = generate_world(config.demo, root)
        print(f"demo world in {root} (base url {world.get('base_url')})")
    else:
        from witcurate.demo.host import serve_forever
        serve_forever(root, config.demo.host, config.demo.port)
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; `command` (the subcommand about to run) is the one stage fully built."""
    parser = argparse.ArgumentParser(
        prog="witcurate", description="Curate WIT-style image-text datasets with Apache Beam, and train CLIP on them.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Beam's own logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run every stage in order from a config",
                       description="Run every stage in run.stages under one run directory.")
    p.add_argument("--out", default=None, help="run directory (default: run.out from the config)")
    p.add_argument("--stages", default=None, help="comma-separated subset of stages to run")
    _common(p)
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("demo", help="generate the demo world or serve its image host")
    p.add_argument("action", choices=["generate", "serve"])
    p.add_argument("--root", default=None, help="demo world directory (default: demo.root)")
    _common(p)
    p.set_defaults(handler=_cmd_demo)

    p = sub.add_parser("audit", help="verify a finished run's manifests and accounting")
    p.add_argument("run_dir", metavar="OUT")
    p.set_defaults(handler=_cmd_audit)

    p = sub.add_parser("browse", help="write OUT/browse/, a static report of a run to open in a browser",
                       description="Write OUT/browse/: the funnel, samples of every stage's rejects by reason, "
                                   "both sides of the CLIP threshold and the queries, as static pages that open "
                                   "from disk with no network; --serve serves them on loopback.")
    p.add_argument("run_dir", metavar="OUT")
    p.add_argument("--serve", action="store_true", help="serve the report over HTTP after building it")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port to serve on (default 8000; 0 picks a free one)")
    p.add_argument("--truth", default=None, metavar="PATH",
                   help="demo runs: the world's truth.parquet (default: demo.root from the run's config)")
    p.set_defaults(handler=_cmd_browse)

    from witcurate.trainer.experiment import DEFAULT_SEEDS, DEFAULT_STEPS
    p = sub.add_parser("experiment", help="the curation ablation: train at equal compute on each arm and compare",
                       description="Build the ablation's arms from a finished run (raw; the CLIP threshold; + "
                                   "semantic dedup; + the target filter; both) and train the same model for the "
                                   "same steps on each, several seeds each; the table goes into the dataset card.")
    p.add_argument("--run", dest="run_dir", required=True, metavar="OUT", help="a finished run directory")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="runs per arm")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps per run (every arm)")
    p.add_argument("--eval", default=None, metavar="DIR", help="eval set (default: train.eval_dir of the run)")
    p.add_argument("--batch-size", type=int, default=None, help="default: train.batch_size of the run")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: train.device of the run)")
    p.add_argument("--default", default=None, metavar="CONFIG",
                   help="the config whose semdedup/target switches the card checks against the table (default: the run's)")
    p.set_defaults(handler=_cmd_experiment)

    _add_stage_parsers(sub, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    verbose = any(a in ("-v", "--verbose") for a in (sys.argv[1:] if argv is None else argv))
    # Libraries log import-time chatter to the root logger (Beam's missing GCP clients, open_clip's
    # "initialized randomly" before a checkpoint is loaded): shown with -v, otherwise errors only.
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args, beam_args = parser.parse_known_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args, check_beam_args(beam_args))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130


def entry() -> None:
    """The console script: runs the command, flushes, and exits without interpreter finalization.

    On CPython 3.11, finalization ends any daemon thread that tries to retake the GIL with
    pthread_exit. A thread doing so from inside torch (pybind11's GIL guard in libtorch_python),
    duckdb or OpenCV unwinds through a C++ frame that may not throw, and libstdc++ aborts:
    "terminate called without an active exception", exit -6, after the command had finished
    (pytorch/pytorch#38228; CPython gh-87135 hangs such threads instead from 3.14). Four lines
    reproduce it: a daemon thread looping `x @ x` on a torch tensor, then the main thread returns.
    witcurate's own daemon threads (the demo host's servers, the download workers' warm-up)
    never enter those libraries, but Beam and img2dataset keep daemon threads of their own, so
    the exit skips finalization (tests/test_cli.py holds the case).

    What finalization would do first still happens: the atexit functions run (as at a normal exit,
    beside any daemon thread still running), so temporary directories made at import are removed
    (wandb, which img2dataset and timm import, makes two in the system's temp folder in every
    process), logging is flushed and multiprocessing reaps its children."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    entry()
