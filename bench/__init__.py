"""mbengine's benchmarks: run them as ``python -m bench NAME`` (bench/__main__.py lists them)."""
