"""Pipeline options whose views are made once per kind of view.

`PipelineOptions.view_as(cls)` builds a new `cls` each time: a fresh argparse parser holding
every option of that class, and a parse of the command line. Beam calls it far more often than
a pipeline's size suggests: inside a pipeline's options scope (while the graph is built and
while the local runner translates it), every type-consistency check asks
`options.view_as(TypeOptions)` whether beartype is on, and a Tuple hint asks again for each of
its elements. Measured: 2.4 ms a check inside a pipeline against 0.05 ms outside one; a small
semdedup stage took 1.5 s, and 1.1 s with construction-time type checks switched off.

A view holds no state of its own: reads and writes of an option go to the `_all_options`
dictionary it shares with the options it was made from, and the flags it parses never change
after construction. So one view of each class, kept by the options object, answers exactly as a
fresh one would, including after an option is set through another view. The cache is left out
when the options are pickled or copied (Pipeline deep-copies its options), so a copy starts
with no views of its own.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

_VIEWS = "_witcurate_views"


class ViewCachingOptions(PipelineOptions):
    """PipelineOptions (no options of its own) that keeps the first view of each class."""

    def view_as(self, cls):
        views = self.__dict__.get(_VIEWS)
        if views is None:
            views = {}
            object.__setattr__(self, _VIEWS, views)     # PipelineOptions refuses unknown names
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop(_VIEWS, None)
        return state
