"""img2dataset imported as a download worker process needs it: importing this module does it.

The workers' fork server imports this module once before it forks them (download_worker._context),
and a spawned worker imports it when it starts (download_worker._init_worker). Where torch or
img2dataset is in already (a test process, a CLI that trained a model), it is a plain import.

* Without torch. img2dataset reaches torch only through webdataset's optional PyTorch classes,
  which fall back to plain ones when torch is missing (webdataset/pytorch.py), and nothing a
  download worker runs uses them. Importing torch is half of img2dataset's import (9.3 -> 4.6
  CPU-s here) and most of a worker's memory (about 900 -> 210 MB resident). Webdataset imported
  this way keeps its plain classes, which a trainer's DataLoader would not take. torch is marked
  absent only while img2dataset imports, then unmarked.
* Without huggingface_hub. albumentations (img2dataset's resizer) imports it for its hub mixin
  (`push_to_hub`, `from_pretrained`) when it can, and falls back when it cannot
  (albumentations/core/hub_mixin.py); the resizer never uses the hub. Marked absent for the same
  import as torch: 250 fewer modules (httpx's core, trio), 0.3-0.5 of the 2.1-2.5 CPU-s each fork
  server spent importing, 11 MB less resident.
* With wandb imported on first use. img2dataset's logger imports wandb for `enable_wandb`, which
  the stage never turns on (download_shard.py), and nothing else in a worker touches it: until an
  attribute of it is asked for, `wandb` is a stand-in module (`OnFirstUse`), 0.8 of the 2.8
  CPU-s each fork server spent importing. (importlib.util.LazyLoader does not serve here: the
  `import wandb` statement itself reads the module's `__spec__`, which loads it.)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

ON_FIRST_USE = ("wandb",)
ABSENT_WHILE_IMPORTING = ("torch", "huggingface_hub")   # optional imports img2dataset's path falls back from


class OnFirstUse(types.ModuleType):
    """Stands in for a module in sys.modules until one of its attributes is asked for; then
    imports the real one (which replaces it there) and answers from it."""

    _lock = threading.RLock()        # reentrant: the import may come back here in this thread

    def __init__(self, spec):
        super().__init__(spec.name)
        self.__spec__ = spec            # what importlib.util.find_spec answers meanwhile

    def __getattr__(self, attr: str):
        with OnFirstUse._lock:
            real = self.__dict__.get("_real")
            if real is None:
                if sys.modules.get(self.__name__) is self:
                    del sys.modules[self.__name__]
                real = self._real = importlib.import_module(self.__name__)
        return getattr(real, attr)


def import_img2dataset() -> None:
    if "torch" in sys.modules or "img2dataset" in sys.modules:
        import img2dataset  # noqa: F401
        return
    for name in ON_FIRST_USE:
        spec = None if name in sys.modules else importlib.util.find_spec(name)
        if spec:
            sys.modules[name] = OnFirstUse(spec)
    absent = [name for name in ABSENT_WHILE_IMPORTING if name not in sys.modules]
    for name in absent:
        sys.modules[name] = None        # `import name` raises ModuleNotFoundError meanwhile
    try:
        import img2dataset  # noqa: F401
    finally:
        for name in absent:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


import_img2dataset()
