"""witcurate: WIT-style image-text dataset curation with Apache Beam, and a CLIP trainer."""

__version__ = "0.1.0"
