"""The download workers' fork server imports this module once before it forks them
(download_worker._context): this module and img2dataset, without torch."""

from witcurate.pipeline import download_worker

download_worker.import_img2dataset()
