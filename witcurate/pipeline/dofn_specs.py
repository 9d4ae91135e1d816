"""Beam's scans of a DoFn (its state and timer parameters, its methods' arguments), done once per
kind of DoFn.

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

The same holds for the argument lists Beam reads off a DoFn's methods (`core.get_function_arguments`,
through `runners.common.MethodWrapper`): every `DoFnSignature` takes the signature of process,
start_bundle, finish_bundle, setup and teardown again, when the ParDo is made, when it is
translated and when each bundle processor is built, about 45 calls per step. On the pure-Beam
chain of the portability tests (five small stages) that was 680 calls a stage and 7% of the
run. `memoised_function_arguments` answers from a memo on the same key plus the method's name.
"""

from __future__ import annotations

import threading
import types
from typing import Any

from apache_beam.transforms import core, userstate

_beam_scan = userstate.get_dofn_specs
_beam_arguments = core.get_function_arguments
_memo: dict[Any, tuple[frozenset, frozenset]] = {}
_argument_memo: dict[Any, tuple[tuple, tuple]] = {}
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
        # Map and FlatMap wrap the user's callable in a lambda of their own and point Beam's
        # argument scan at the callable (`_argspec_fn`): every Map shares the lambda's code.
        return ("function", value.__code__, value.__defaults__,
                tuple(sorted((value.__kwdefaults__ or {}).items())),
                _signature_key(getattr(value, "_argspec_fn", None)))
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
        found = _remember(_memo, key, (frozenset(states), frozenset(timers)))
    return set(found[0]), set(found[1])


def _remember(memo: dict, key: Any, value: Any) -> Any:
    with _lock:
        if len(memo) >= MAX_ENTRIES:
            memo.clear()
        memo[key] = value
    return value


def _arguments_key(obj, method: str) -> Any:
    """What `get_function_arguments(obj, method)` depends on: the class, and what the instance
    puts in place of the method or of its `_inspect_` hook, besides what `_key` reads."""
    state = getattr(obj, "__dict__", {})
    own = tuple((name, _signature_key(state[name])) for name in (method, f"_inspect_{method}")
                if name in state)
    key = (_key(obj), method, own)
    hash(key)
    return key


def memoised_function_arguments(obj, method: str) -> tuple[list[str], list[Any]]:
    """Beam's (argument names, default values) of `obj.method`, from the memo when it can be."""
    try:
        key = _arguments_key(obj, method)
    except TypeError:
        return _beam_arguments(obj, method)
    found = _argument_memo.get(key)
    if found is None:
        names, defaults = _beam_arguments(obj, method)
        found = _remember(_argument_memo, key, (tuple(names), tuple(defaults)))
    return list(found[0]), list(found[1])


def install() -> None:
    """Put the memos in place of Beam's scans (idempotent)."""
    if userstate.get_dofn_specs is _beam_scan:
        userstate.get_dofn_specs = memoised_dofn_specs
    if core.get_function_arguments is _beam_arguments:
        core.get_function_arguments = memoised_function_arguments
