"""`make bench`: run every benchmarks/bench_*.py and print one table of ratios."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback

import benchmarks


def main(selected: list[str]) -> int:
    rows, failed = [], []
    for mod in sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")):
        if selected and mod not in selected and mod[len("bench_"):] not in selected:
            continue
        print(f"== {mod}", flush=True)
        try:
            rows.extend(importlib.import_module(f"benchmarks.{mod}").run())
        except Exception:
            traceback.print_exc()
            failed.append(mod)
    print(f"\n{'benchmark':<34} {'ours':>12} {'baseline':>12} {'unit':<14} {'ratio':>7}  target")
    for r in rows:
        print(f"{r['name']:<34} {r['ours']:>12,.1f} {r['baseline']:>12,.1f} {r['unit']:<14} "
              f"{r['ratio']:>7.2f}  {r.get('target', '')}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
