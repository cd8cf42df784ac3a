"""Damaged checkpoints, through every reader: each load ends in a clear MBEngineError or in a model that runs.

Hypothesis damages the committed fixtures (tests/fixtures/tiny: safetensors,
pytorch_model.bin zip and legacy, tf_model.h5, a TF1 bundle) and engine
checkpoints (float32 and int8) built here: truncation, byte flips, and
mutations of what each format's header says (safetensors dtypes, shapes and
offsets; config.json fields and bytes). For every damaged file exactly one
outcome is allowed: an MBEngineError (which names the problem), or a
successful load whose model runs. Any other exception fails, and so does a
load that takes longer than HANG seconds (an alarm, not a speed measurement).
Pickle payloads that run code are tested in test_converters_readers.py.

CI draws a fixed set of examples (the derandomised profile) within
``FUZZ_EXAMPLES`` per format; ``MBENGINE_FUZZ_EXAMPLES=2000
HYPOTHESIS_PROFILE=random pytest tests/test_fuzz_readers.py`` searches longer.
"""

import json
import os
import shutil
import signal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mbengine
from mbengine import quantize as q8
from mbengine.cli import random_checkpoint
from mbengine.config import MobileBertConfig
from mbengine.converters import engine
from mbengine.errors import MBEngineError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tiny")
FUZZ_EXAMPLES = int(os.environ.get("MBENGINE_FUZZ_EXAMPLES", "25"))
HANG = 20  # seconds: a load that takes longer is stuck (they take ~0.1 s)
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SMALL = MobileBertConfig(
    vocab_size=40,
    hidden_size=32,
    embedding_size=16,
    intra_bottleneck_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=32,
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{kind: (checkpoint directory, the file in it to damage)}."""
    root = tmp_path_factory.mktemp("fuzz-sources")
    out = {}
    for kind, name in (
        ("safetensors", "model.safetensors"),
        ("bin-zip", "pytorch_model.bin"),
        ("bin-legacy", "pytorch_model_legacy.bin"),
        ("h5", "tf_model.h5"),
    ):
        d = root / kind
        d.mkdir()
        shutil.copy(os.path.join(FIXTURES, "config.json"), d / "config.json")
        shutil.copy(os.path.join(FIXTURES, name), d / ("pytorch_model.bin" if kind.startswith("bin") else name))
        out[kind] = (d, "pytorch_model.bin" if kind.startswith("bin") else name)
    d = root / "tf1"
    shutil.copytree(os.path.join(FIXTURES, "tf1"), d)
    shutil.copy(os.path.join(FIXTURES, "config.json"), d / "config.json")
    out["tf1-index"] = (d, "model.ckpt.index")
    out["tf1-data"] = (d, "model.ckpt.data-00000-of-00001")
    hf = random_checkpoint(str(root / "hf"), SMALL, head="pretraining")
    float_model = mbengine.MobileBertForPreTraining.from_pretrained(hf)
    out["engine"] = (engine.write(float_model.weights, root / "engine"), "model.safetensors")
    description, batches = q8.calibration_batches(SMALL, batch_size=2, max_length=8)
    int8, _ = q8.quantize(float_model.weights, batches, calibration=description)
    out["engine-int8"] = (engine.write(int8, root / "engine-int8"), "model.safetensors")
    out["config"] = (hf, "config.json")
    # Compile every kernel a load runs now, outside the HANG alarm: with a cold Numba cache on a busy
    # machine the int8 kernels' first compile alone can take longer than HANG.
    for kind in ("safetensors", "engine-int8"):
        mbengine.MobileBertForPreTraining.from_pretrained(out[kind][0])(np.array([[1, 2, 3, 4]]))
    return out


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"a load took more than {HANG} s")


def outcome(directory) -> str:
    """Load ``directory`` as the pretraining model and run it: "ran", or the MBEngineError's class name."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG)
    try:
        model = mbengine.MobileBertForPreTraining.from_pretrained(directory)
        out = model(np.array([[1, 2, 3, 4]]))
        assert out.prediction_logits.shape == (1, 4, model.config.vocab_size)
        return "ran"
    except MBEngineError as e:
        assert str(e).strip(), "an error without a message"
        return type(e).__name__
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def damaged(tmp_path_factory, sources, kind, data: bytes):
    src, name = sources[kind]
    d = tmp_path_factory.mktemp(kind)
    shutil.rmtree(d)
    shutil.copytree(src, d)
    (d / name).write_bytes(data)
    return d


def original(sources, kind) -> bytes:
    src, name = sources[kind]
    return (src / name).read_bytes() if hasattr(src, "read_bytes") else open(os.path.join(src, name), "rb").read()


# A damage plan is small (what Hypothesis prints for a failing example); apply_* makes the file.
BYTE_PLANS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(
        st.just("flip"),
        st.booleans(),  # in the first KiB (the headers), or anywhere
        st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8),
    ),
)


def apply_bytes(plan, data: bytes) -> bytes:
    if plan[0] == "truncate":
        return data[: int(plan[1] * len(data))]
    _, head, flips = plan
    out = bytearray(data)
    span = min(len(out), 1024) if head else len(out)
    for where, xor in flips:
        out[int(where * span)] ^= xor
    return bytes(out)


KINDS = ["safetensors", "bin-zip", "bin-legacy", "h5", "tf1-index", "tf1-data", "engine", "engine-int8", "config"]


@pytest.mark.parametrize("kind", KINDS)
def test_undamaged_sources_run(sources, kind):
    assert outcome(sources[kind][0]) == "ran"


@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(plan=BYTE_PLANS)
def test_byte_damage(tmp_path_factory, sources, kind, plan):
    outcome(damaged(tmp_path_factory, sources, kind, apply_bytes(plan, original(sources, kind))))


NUMBERS = st.one_of(st.integers(-(2**64), 2**64), st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, 2**63, 10**12]))
JSONISH = st.one_of(NUMBERS, st.none(), st.booleans(), st.text(max_size=8), st.lists(NUMBERS, max_size=4), st.floats())


HEADER_PLANS = st.tuples(
    st.floats(0, 1, exclude_max=True),  # which entry (in name order; __metadata__ among them)
    st.sampled_from(["dtype", "shape", "data_offsets", "whole entry"]),
    st.one_of(
        JSONISH,
        st.sampled_from(["F32", "F16", "BF16", "F64", "I8", "I64", "U8", "BOOL", "F8_E4M3", "f32"]),
        st.lists(NUMBERS, min_size=2, max_size=2),
        st.dictionaries(st.text(max_size=4), JSONISH, max_size=2),
    ),
)


def apply_header(plan, data: bytes) -> bytes:
    """The safetensors file with one header entry (or one field of it) replaced by ``plan``'s value."""
    where, field, value = plan
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    name = sorted(header)[int(where * len(header))]
    if field == "whole entry" or name == "__metadata__":
        header[name] = value
    else:
        header[name][field] = value
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data[8 + n :]


@pytest.mark.parametrize("kind", ["safetensors", "engine", "engine-int8"])
@FUZZ
@given(plan=HEADER_PLANS)
def test_safetensors_header_damage(tmp_path_factory, sources, kind, plan):
    outcome(damaged(tmp_path_factory, sources, kind, apply_header(plan, original(sources, kind))))


CONFIG_FIELDS = st.sampled_from(
    [
        "hidden_size",
        "num_hidden_layers",
        "vocab_size",
        "embedding_size",
        "intermediate_size",
        "num_attention_heads",
        "max_position_embeddings",
        "type_vocab_size",
        "intra_bottleneck_size",
        "num_feedforward_networks",
        "trigram_input",
        "use_bottleneck",
        "normalization_type",
        "hidden_act",
        "tie_word_embeddings",
        "architectures",
        "model_type",
        "mbengine",
    ]
)


@pytest.mark.parametrize("kind", ["config", "engine", "engine-int8"])
@FUZZ
@given(data=st.data())
def test_config_field_damage(tmp_path_factory, sources, kind, data):
    """config.json fields of the right name and the wrong value (an engine checkpoint's mbengine block too)."""
    src, _ = sources[kind]
    config = json.loads(open(os.path.join(src, "config.json")).read())
    field = data.draw(CONFIG_FIELDS)
    if field == "mbengine" and "mbengine" in config:
        key = data.draw(st.sampled_from(["format_version", "dtype", "tile_cols", "head", "pooler", "quantization"]))
        config["mbengine"][key] = data.draw(JSONISH)
    else:
        config[field] = data.draw(JSONISH)
    d = damaged(tmp_path_factory, sources, kind, original(sources, kind))
    (d / "config.json").write_text(json.dumps(config))
    outcome(d)
