"""Shared test setup: Hypothesis profiles; quiet Hugging Face progress bars and logs; the kernels.

Hypothesis runs the derandomised ``ci`` profile unless ``HYPOTHESIS_PROFILE``
names another: every run, a fresh clone included, draws the same examples.
``HYPOTHESIS_PROFILE=random pytest`` draws new ones on every run (and keeps
failing examples in .hypothesis/ to replay); repeat it for a longer search.

Numba's cache: unless ``NUMBA_CACHE_DIR`` is set (CI sets an empty one), the
tests compile into a folder named by a digest of every kernel source file,
``$XDG_CACHE_HOME/mbengine-tests/numba-<digest>`` (else ``~/.cache``). Numba
keys a cached kernel by its own file only, so after an edit of ``simd.py`` a
cache shared with other runs would give ``linear`` its old tiles: the tests
would pass on code that no longer exists. An edit of any kernel file now
starts the tests on a cache of their own (a cold compile, minutes); the
three most recently used such folders are kept.
"""

import os
import shutil
import tempfile

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("random", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub (a stray id in a fuzzed CLI argument)
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# Tests run the kernels on Numba (the native library's tests choose per subprocess), and anything that
# builds a native library (warmup, convert) builds it in a folder of this run, not the user's cache
os.environ.setdefault("MBENGINE_KERNELS", "numba")
os.environ.setdefault("MBENGINE_NATIVE_DIR", tempfile.mkdtemp(prefix="mbengine-native-"))


def _numba_cache_of_these_sources() -> str:
    """The tests' Numba cache folder for the kernel sources as they are now (module doc); older ones
    beyond the three most recently used are removed."""
    from mbengine.kernels.native import sources_digest  # (imports neither Numba nor any kernel)

    root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mbengine-tests")
    folder = os.path.join(root, "numba-" + sources_digest()[:16])
    os.makedirs(folder, exist_ok=True)
    os.utime(folder)  # (used now: the pruning below keeps it)
    others = [os.path.join(root, n) for n in os.listdir(root) if n.startswith("numba-")]
    for old in sorted(others, key=os.path.getmtime, reverse=True)[3:]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


if "NUMBA_CACHE_DIR" not in os.environ:  # (before anything imports Numba, which reads it once)
    os.environ["NUMBA_CACHE_DIR"] = _numba_cache_of_these_sources()
