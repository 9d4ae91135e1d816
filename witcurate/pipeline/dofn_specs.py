"""Beam's scan of a DoFn for state and timer parameters, done once per kind of DoFn.

Beam asks `userstate.get_dofn_specs(dofn)` whether a DoFn is stateful about six times for every
ParDo of a pipeline (when the ParDo is made, twice while translating the graph, when the local
runner checks its keyed inputs, twice when it builds a bundle processor). Each call wraps every
method the DoFn has (about forty, DoFn's own included) and takes its signature: about 1 ms a
call. Measured on a queries stage over a handful of pages, the scan was 29% of the stage, and
15% of the curation experiment's test; pipelines here are many small steps (Map, Filter,
CombineGlobally expand to several DoFns each), so the fixed cost is paid thousands of times on
small inputs.

What the scan finds depends only on the DoFn's class and on what an instance puts in place of
a method: the callable a Map or FlatMap wraps (CallableWrapperDoFn keeps it as `_fn`, with its
argument spec), or a bound method stored on the instance; of a callable, only its signature.
`install()` memoises the scan on exactly that key and leaves every other DoFn (one whose key
cannot be hashed) to Beam's own scan; callers get fresh sets, as from Beam. Beam is pinned
(docs/pins.md); the memo is installed only over the function it was written against.
"""

from __future__ import annotations

import threading
import types
from typing import Any

from apache_beam.transforms import userstate

_beam_scan = userstate.get_dofn_specs
_memo: dict[Any, tuple[frozenset, frozenset]] = {}
_lock = threading.Lock()
MAX_ENTRIES = 50_000        # a process building pipelines all day keeps a bounded memo

# Instance attributes the scan reads besides methods (CallableWrapperDoFn's wrapped callable).
_SCANNED_ATTRIBUTES = ("_fn", "_fullargspec")


def _signature_key(value) -> Any:
    """What a callable's signature depends on. A plain function is named by its code and its
    defaults, not its identity: the local runner unpickles every DoFn (and the lambda a Map
    wraps) into new objects, and those must find the memo too."""
    if isinstance(value, types.MethodType):
        return ("method", _signature_key(value.__func__))
    if (isinstance(value, types.FunctionType) and not hasattr(value, "__wrapped__")
            and not hasattr(value, "__signature__")):
        return ("function", value.__code__, value.__defaults__,
                tuple(sorted((value.__kwdefaults__ or {}).items())))
    if isinstance(value, (list, tuple)):       # an argument spec: (names, defaults)
        return tuple(_signature_key(v) for v in value)
    return value


def _key(dofn) -> Any:
    state = getattr(dofn, "__dict__", {})
    own = tuple((name, _signature_key(value)) for name, value in state.items()
                if name in _SCANNED_ATTRIBUTES or isinstance(value, types.MethodType))
    key = (type(dofn), own)
    hash(key)                   # TypeError: left to Beam's scan
    return key


def memoised_dofn_specs(dofn) -> tuple[set, set]:
    try:
        key = _key(dofn)
    except TypeError:
        return _beam_scan(dofn)
    found = _memo.get(key)
    if found is None:
        states, timers = _beam_scan(dofn)
        found = (frozenset(states), frozenset(timers))
        with _lock:
            if len(_memo) >= MAX_ENTRIES:
                _memo.clear()
            _memo[key] = found
    return set(found[0]), set(found[1])


def install() -> None:
    """Put the memo in place of Beam's scan (idempotent)."""
    if userstate.get_dofn_specs is _beam_scan:
        userstate.get_dofn_specs = memoised_dofn_specs
