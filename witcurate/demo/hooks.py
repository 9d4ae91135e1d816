"""The demo plugged into `witcurate run` (a RunHook, registered by the CLI when run.demo is true).

While the stages run: the demo world exists (generated if missing) and its image host serves it,
appending every request to OUT/demo_host_log.jsonl.
After them: the run is judged against the world's ground truth, which the pipeline never reads;
the report is saved beside the run (demo_truth.json) and added to the dataset card.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from witcurate.config import Config
from witcurate.pipeline import fs


class DemoHooks:
    def __init__(self, config: Config):
        self.config = config

    @contextlib.contextmanager
    def running(self, out_root: str, progress: Callable[[str], None]) -> Iterator[object]:
        """Generate the demo world if missing and serve its image host until the block ends."""
        from witcurate.demo.host import ImageHost
        from witcurate.demo.world import generate_world

        demo = self.config.demo
        generate_world(demo, demo.root, progress=progress)
        from witcurate.demo.truth_report import HOST_LOG
        log_path = None
        if "://" not in out_root:                   # the host's request log, beside a local run
            fs.makedirs(out_root)
            log_path = fs.join(out_root, HOST_LOG)
        host = ImageHost(fs.join(demo.root), demo.host, demo.port, log_path=log_path)
        host.start()
        progress(f"[demo] image host serving {demo.root} at {host.base_url}")
        try:
            yield host
        finally:
            host.stop()

    def after(self, out_root: str, progress: Callable[[str], None]) -> None:
        progress("\n" + truth_report(self.config, out_root))


def truth_report(config: Config, out_root: str) -> str:
    """Judge the run against the demo world's ground truth; saved beside the run and in the card."""
    from witcurate.demo.truth_card import card_markdown
    from witcurate.demo.truth_report import evaluate_run, format_report
    from witcurate.pipeline.card import README, add_card_section

    report = evaluate_run(out_root, config.demo.root)
    fs.write_json(fs.join(out_root, "demo_truth.json"), report)
    text = format_report(report)
    shards = fs.join(out_root, "shards")
    if fs.exists(fs.join(shards, README)):
        add_card_section(shards, "demo-truth", "Filter quality against the demo's ground truth",
                         card_markdown(report, text, shards))
    return text


def demo_hooks(config: Config) -> list[DemoHooks]:
    """The hooks a run of `config` needs: the demo's when run.demo is true, else none."""
    return [DemoHooks(config)] if config.run.demo else []
