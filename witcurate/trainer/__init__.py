"""The bundled CLIP trainer: open_clip models, ClipLoss, webdataset loader, evaluation."""

import os

# OpenMP threads that spin-wait at every barrier collapse when the cores are shared (measured on
# a 2-core machine with other jobs running: a tiny CLIP step took 3.0 s with spinning threads,
# 0.4 s with passive ones). Only takes effect if torch is first imported after this; a value
# the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
