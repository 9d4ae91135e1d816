"""The card's top-hosts table: the hosts with the most URLs and what the download made of them
(the download manifest's `hosts`, counted in Beam by download_hosts.py)."""

from __future__ import annotations

from witcurate.config import Config
from witcurate.pipeline.card.manifests import CardData
from witcurate.pipeline.card.render import Section, fmt


def top_hosts(out_root: str, data: CardData, config: Config, card_dir: str) -> Section:
    section = Section("Top hosts")
    hosts = (data.manifests.get("download") or {}).get("hosts")
    if not hosts or not hosts.get("top"):
        section.note = "Skipped: no download stage in this run, or one that counted no hosts."
        return section
    cfg = config.download
    robots = hosts.get("robots") or {}
    verdicts = ", ".join(f"{k.replace('_', ' ')} {fmt(v)}" for k, v in sorted(robots.items()))
    section.note = (f"{fmt(hosts.get('distinct'))} hosts; the {len(hosts['top'])} with the most URLs. "
                    f"At most {cfg.per_host_connections} requests open to one host per download shard"
                    + (f", {cfg.per_host_delay:g} s between request starts" if cfg.per_host_delay else "")
                    + (f"; robots.txt obeyed (origins: {verdicts})." if cfg.obey_robots and verdicts
                       else "; robots.txt not fetched." if not cfg.obey_robots else "."))
    section.extra = ["| host | URLs | fetched | disallowed (robots.txt) | robots.txt unreadable "
                     "| rate limited | failed |", "|---|---:|---:|---:|---:|---:|---:|"]
    for h in hosts["top"]:
        section.extra.append(f"| {h['host']} | {fmt(h['urls'])} | {fmt(h['fetched'])} | "
                             f"{fmt(h['disallowed'])} | {fmt(h['robots_unavailable'])} | "
                             f"{fmt(h['rate_limited'])} | {fmt(h['failed'])} |")
    section.extra.append("")
    return section
