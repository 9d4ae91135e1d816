"""Beam plumbing (runner, contracts, options) and the moving stages."""
