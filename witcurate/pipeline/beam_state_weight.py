"""Beam's state cache weighs what it caches without listing every loaded module each time.

An SDK worker's state cache weighs each value it caches (a side input, the first time a bundle
reads it; the write results a sink finalizes) with `objsize.get_deep_size`. By default objsize
first puts the globals of every loaded module in its exclusion set, at every call: with Beam,
torch and open_clip loaded (about 4,900 modules) that is 4.5 ms a call whatever the value,
against 0.01 ms for walking a small list. A stage reads its side inputs in every bundle, so the
suite's pipelines spent about 4% of their processes' CPU there.

Beam's own filter (`statecache._filter_func`) already stops the walk at modules, functions,
frames and types, the objects through which a module's globals are reached, so leaving the
globals out of the exclusion set weighs the same bytes: only a value that holds a module's
globals dict itself would now count it (weighing more, never less). `install()` puts in
Beam's function with that one setting changed. Beam is pinned (docs/pins.md); the wrapper is
installed only over the function it was written against.
"""

from __future__ import annotations

from typing import Any

import objsize
from apache_beam.runners.worker import statecache

_beam_weight = statecache.get_deep_size


def deep_size(*objs: Any) -> int:
    """`statecache.get_deep_size` without re-listing the loaded modules' globals."""
    return objsize.get_deep_size(
        *objs,
        get_size_func=statecache._size_func,
        get_referents_func=statecache._get_referents_func,
        filter_func=statecache._filter_func,
        exclude_modules_globals=False)


def install() -> None:
    """Weigh the state cache's values with `deep_size` (idempotent)."""
    if statecache.get_deep_size is _beam_weight:
        statecache.get_deep_size = deep_size
