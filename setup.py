"""Lets Beam's `--setup_file ./setup.py` ship the package to Dataflow workers; metadata lives in
pyproject.toml."""

import setuptools

setuptools.setup()
