"""The demo world: a small, honest stand-in for Wikipedia, the web and its images."""
