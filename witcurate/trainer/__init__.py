"""The bundled CLIP trainer: open_clip models, ClipLoss, webdataset loader, evaluation."""
