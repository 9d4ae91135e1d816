"""Beam's local runner with its bundles in two worker processes instead of this one.

Unpicklable DoFns, state kept in the driver, per-process set-up and keys that differ between
processes fail there as they would on Dataflow; each stage run this way starts two Python
workers (about 2 CPU-s each to import Beam), so tests run in it only what has something of its
own to get wrong there.
"""

MULTI_PROCESS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
