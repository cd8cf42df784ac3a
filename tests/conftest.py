"""Shared test setup: Hypothesis profiles; quiet Hugging Face progress bars and logs; the kernels.

Hypothesis runs the derandomised ``ci`` profile unless ``HYPOTHESIS_PROFILE``
names another: every run, a fresh clone included, draws the same examples.
``HYPOTHESIS_PROFILE=random pytest`` draws new ones on every run (and keeps
failing examples in .hypothesis/ to replay); repeat it for a longer search.
"""

import os
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
