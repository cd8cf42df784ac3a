"""Every checkpoint reader on committed fixtures, with no deep-learning framework.

tests/fixtures/tiny holds one set of weights written by each format's own library
(torch 2.13, transformers 4.57, TensorFlow 2.21; tests/fixtures/make_fixtures.py):
each reader must give the same canonical tensors as the zip pytorch_model.bin and
as transformers' safetensors, and the engine must reproduce the outputs
transformers computed. Hostile and damaged files must fail with CheckpointError
naming the file, and a pickle's payload must never run.

Needs only numpy, safetensors and (for tf_model.h5) h5py.
"""

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import mbengine
from mbengine import safetensors_mmap
from mbengine.config import MobileBertConfig
from mbengine.converters import canonical, checksum, tf_bundle, tf_h5, torch_bin
from mbengine.errors import CheckpointError

from .helpers import rel_err

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tiny")
CONFIG = MobileBertConfig.from_pretrained(FIXTURES)
EXPECTED = np.load(os.path.join(FIXTURES, "expected.npz"))
try:
    import h5py  # noqa: F401  (optional: only tf_model.h5 needs it)

    HAVE_H5PY = True
except ImportError:
    HAVE_H5PY = False
needs_h5py = pytest.mark.skipif(
    not HAVE_H5PY, reason="h5py is not installed (pip install h5py): tf_model.h5 cannot be read without it"
)


def fixture(*parts):
    return os.path.join(FIXTURES, *parts)


READERS = {
    "bin-zip": lambda: torch_bin.read_torch_bin(fixture("pytorch_model.bin")),
    "bin-legacy": lambda: torch_bin.read_torch_bin(fixture("pytorch_model_legacy.bin")),
    "bin-sharded": lambda: torch_bin.read_sharded(fixture("sharded_bin", "pytorch_model.bin.index.json")),
    "safetensors": lambda: safetensors_mmap.load(fixture("model.safetensors"))[0],
    "safetensors-sharded": lambda: torch_bin.read_sharded(
        fixture("sharded_safetensors", "model.safetensors.index.json")
    ),
    "tf1": lambda: tf_bundle.read_tf_checkpoint(fixture("tf1", "model.ckpt")),
    "tf1-sharded": lambda: tf_bundle.read_tf_checkpoint(fixture("tf1_sharded", "model.ckpt")),
    "h5": lambda: tf_h5.read_tf_h5(fixture("tf_model.h5")),
}
KINDS = [pytest.param(k, marks=needs_h5py) if k == "h5" else k for k in READERS]


def canonical_of(kind):
    return canonical.model_tensors(READERS[kind](), CONFIG, "pretraining")


@pytest.fixture(scope="module")
def reference():
    ref = canonical_of("bin-zip")
    canonical.validate(ref, CONFIG, "zip pytorch_model.bin", head="pretraining")
    return ref


# ------------------------------------------------------------------------- same tensors
@pytest.mark.parametrize("kind", KINDS)
def test_reader_gives_the_canonical_tensors(reference, kind):
    tensors = canonical_of(kind)
    canonical.validate(tensors, CONFIG, kind, head="pretraining")
    assert tensors.keys() == reference.keys()
    for name, arr in tensors.items():
        assert arr.dtype == np.float32 and arr.flags.c_contiguous, name
        np.testing.assert_array_equal(arr, reference[name], err_msg=f"{kind}: {name}")


def test_bin_and_safetensors_hold_the_same_named_tensors():
    """Before any canonical fixing-up: the two PyTorch-side files agree name by name."""
    zipped, st = READERS["bin-zip"](), READERS["safetensors"]()
    assert set(st) <= set(zipped)
    assert set(zipped) - set(st) == {"cls.predictions.decoder.weight"}  # tied: save_pretrained drops it
    for name in st:
        np.testing.assert_array_equal(zipped[name], st[name], err_msg=name)


# --------------------------------------------------------------------- same outputs
@pytest.mark.parametrize("kind", KINDS)
def test_engine_reproduces_transformers(kind):
    model = mbengine.MobileBertForPreTraining.from_tensors(CONFIG, READERS[kind](), trigram_padding="hf", source=kind)
    out = model(EXPECTED["input_ids"], token_type_ids=EXPECTED["token_type_ids"], output_hidden_states=True)
    got = {
        "prediction_logits": out.prediction_logits,
        "seq_relationship_logits": out.seq_relationship_logits,
        "last_hidden_state": out.hidden_states[-1],
    }
    for field, value in got.items():
        assert rel_err(value, EXPECTED[field]) <= 1e-5, field
    tag = kind.split("-")[0]
    if tag in ("h5", "tf1"):  # and what transformers itself computes from that very file
        for field in ("prediction_logits", "seq_relationship_logits"):
            assert rel_err(got[field], EXPECTED[f"{tag}_{field}"]) <= 1e-5, field


@pytest.mark.parametrize("kind", ["sharded_bin", "sharded_safetensors"])
def test_from_pretrained_finds_sharded_checkpoints(tmp_path, kind):
    shutil.copytree(fixture(kind), tmp_path / kind)
    shutil.copy(fixture("config.json"), tmp_path / kind / "config.json")
    model = mbengine.MobileBertForPreTraining.from_pretrained(tmp_path / kind, trigram_padding="hf")
    out = model(EXPECTED["input_ids"], token_type_ids=EXPECTED["token_type_ids"])
    assert rel_err(out.prediction_logits, EXPECTED["prediction_logits"]) <= 1e-5


# ------------------------------------------------------------- torch storage layouts
@pytest.mark.parametrize("name", ["views.bin", "views_legacy.bin"])
def test_strided_offset_shared_and_typed_storages(name):
    """Transposed, offset, stepped, permuted, expanded views; fp16/bf16/fp64 widened; ints and bools kept."""
    expected = np.load(fixture("views_expected.npz"))
    got = torch_bin.read_torch_bin(fixture(name))
    assert got.keys() == set(expected.files)
    for key in expected.files:
        assert got[key].dtype == expected[key].dtype, key
        assert got[key].flags.c_contiguous, key
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert got["half"].dtype == got["bfloat16"].dtype == got["double"].dtype == np.float32
    assert got["int64"].dtype == np.int64 and got["bool"].dtype == np.bool_


# ---------------------------------------------------------------------- hostile pickles
EVIL = {  # fixture -> (refused global, file its payload would create)
    "evil_system.bin": (r"posix\.system", "MBENGINE_PWNED_SYSTEM"),
    "evil_eval_legacy.bin": (r"__builtin__\.eval \(builtins\.eval\)", "MBENGINE_PWNED_EVAL"),
    "evil_nested.bin": (r"posix\.system", "MBENGINE_PWNED_NESTED"),
}


@pytest.mark.parametrize("name", sorted(EVIL))
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch, name):
    refused, marker = EVIL[name]
    monkeypatch.chdir(tmp_path)  # the payloads write into the current directory
    with pytest.raises(CheckpointError, match=rf"{name}: refused to load the global {refused}.*not executed"):
        torch_bin.read_torch_bin(fixture(name))
    assert not os.path.exists(tmp_path / marker)
    assert not os.path.exists(os.path.join(FIXTURES, marker))


@pytest.mark.parametrize("name", ["evil_system.bin", "evil_eval_legacy.bin"])
def test_malicious_fixtures_are_live(tmp_path, name):
    """Control: the same bytes through an unrestricted pickle.load do run the payload (in a throwaway
    directory, in a child process), so the refusal test above is not vacuous."""
    _, marker = EVIL[name]
    script = (
        "import pickle, sys, zipfile\n"
        "p = sys.argv[1]\n"
        "if zipfile.is_zipfile(p):\n"
        "    pickle.loads(zipfile.ZipFile(p).read('archive/data.pkl'))\n"
        "else:\n"
        "    f = open(p, 'rb')\n"
        "    for _ in range(4): pickle.load(f)\n"
    )
    subprocess.run([sys.executable, "-c", script, fixture(name)], cwd=tmp_path, check=True, stdout=subprocess.DEVNULL)
    assert os.path.exists(tmp_path / marker)


def _zip_of(data_pkl: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
    return buf.getvalue()


@pytest.mark.parametrize(
    "module,name",
    [
        ("subprocess", "Popen"),
        ("builtins", "getattr"),
        ("builtins", "exec"),
        ("copyreg", "_reconstructor"),
        ("torch", "load"),
        ("torch._utils", "_rebuild_qtensor"),
        ("numpy.core.multiarray", "_reconstruct"),
    ],
)
def test_any_other_global_is_refused(tmp_path, module, name):
    """A GLOBAL opcode for anything outside the allow-list stops the load before REDUCE can call it."""
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(_zip_of(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x04\x00\x00\x00argsR."))
    with pytest.raises(CheckpointError, match=rf"pytorch_model.bin: refused to load the global {module}\.{name}"):
        torch_bin.read_torch_bin(path)


# --------------------------------------------------------------------- damaged torch files
def _damaged_torch(tmp_path, damage):
    if damage.startswith("sharded"):
        d = tmp_path / "sharded"
        shutil.copytree(fixture("sharded_bin"), d)
        index = d / "pytorch_model.bin.index.json"
        meta = json.loads(index.read_text())
        if damage == "sharded-missing-shard":
            (d / "pytorch_model-00002-of-00002.bin").unlink()
        elif damage == "sharded-unknown-tensor":
            meta["weight_map"]["mobilebert.not_there.weight"] = "pytorch_model-00001-of-00002.bin"
        elif damage == "sharded-escaping-shard":
            meta["weight_map"]["cls.predictions.bias"] = "../../etc/passwd"
        else:  # sharded-bad-json
            index.write_text("{not json")
            return index, lambda: torch_bin.read_sharded(index)
        index.write_text(json.dumps(meta))
        return index, lambda: torch_bin.read_sharded(index)
    path = tmp_path / "pytorch_model.bin"
    source = fixture("pytorch_model_legacy.bin" if "legacy" in damage else "pytorch_model.bin")
    data = open(source, "rb").read()
    if damage.startswith("truncated"):
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "missing-storage":
        with zipfile.ZipFile(source) as z:
            entries = {n: z.read(n) for n in z.namelist() if not n.endswith("/data/3")}
        with zipfile.ZipFile(path, "w") as z:
            for n, blob in entries.items():
                z.writestr(n, blob)
    elif damage == "short-storage":
        with zipfile.ZipFile(source) as z:
            entries = {n: z.read(n) for n in z.namelist()}
        entries[next(n for n in entries if n.endswith("/data/0"))] = b"\0" * 8
        with zipfile.ZipFile(path, "w") as z:
            for n, blob in entries.items():
                z.writestr(n, blob)
    return path, lambda: torch_bin.read_torch_bin(path)


TORCH_DAMAGE = {
    "truncated-zip": "damaged zip archive",
    "truncated-legacy": "truncated",
    "garbage": "not a readable PyTorch checkpoint",
    "empty": "not a readable PyTorch checkpoint",
    "missing-storage": "storage 3 is missing from the archive",
    "short-storage": "storage 0 holds 8 bytes",
    "sharded-missing-shard": "shard pytorch_model-00002-of-00002.bin is missing",
    "sharded-unknown-tensor": "in no shard",
    "sharded-escaping-shard": "not a file name in the checkpoint's directory",
    "sharded-bad-json": "not a checkpoint index",
}


@pytest.mark.parametrize("damage", sorted(TORCH_DAMAGE))
def test_damaged_torch_checkpoints_name_the_file(tmp_path, damage):
    path, read = _damaged_torch(tmp_path, damage)
    with pytest.raises(CheckpointError, match=TORCH_DAMAGE[damage]) as info:
        read()
    assert os.fspath(path) in str(info.value)


# ------------------------------------------------------------------ damaged TF1 bundles
def _copy_tf1(tmp_path, which="tf1"):
    d = tmp_path / which
    shutil.copytree(fixture(which), d)
    return d


def _rewrite_block_crc(data: bytearray, offset: int, size: int) -> None:
    struct.pack_into("<I", data, offset + size + 1, checksum.masked_crc32c(bytes(data[offset : offset + size + 1])))


def _first_data_block(data: bytes):
    footer = data[-tf_bundle.FOOTER_SIZE :]
    _, pos = tf_bundle._varint(footer, 0)
    _, pos = tf_bundle._varint(footer, pos)
    index_offset, pos = tf_bundle._varint(footer, pos)
    index_size, _ = tf_bundle._varint(footer, pos)
    (_, handle), *_ = tf_bundle._block(data, (index_offset, index_size), "index")
    return tf_bundle._handle(handle)


@pytest.mark.parametrize(
    "damage",
    [
        "bad-magic",
        "truncated-index",
        "truncated-tail",
        "missing-shard",
        "short-shard",
        "footer-varint",
        "entry-varint",
        "block-crc",
        "data-crc",
        "missing-index",
    ],
)
def test_damaged_tf1_checkpoints_name_the_file(tmp_path, damage):
    d = _copy_tf1(tmp_path, "tf1_sharded" if damage == "missing-shard" else "tf1")
    index = d / "model.ckpt.index"
    data = bytearray(index.read_bytes())
    culprit, match = index, None
    if damage == "bad-magic":
        data[-8:] = b"\0" * 8
        match = "bad table magic"
    elif damage == "truncated-index":
        data = data[:30]
        match = "too short"
    elif damage == "truncated-tail":  # the footer survives only as garbage
        data = data[: len(data) // 2]
    elif damage == "missing-shard":
        culprit = d / "model.ckpt.data-00002-of-00003"
        culprit.unlink()
        match = "missing or unreadable data shard"
    elif damage == "short-shard":
        culprit = d / "model.ckpt.data-00000-of-00001"
        culprit.write_bytes(culprit.read_bytes()[:1000])
        match = "does not fit its data shard"
    elif damage == "footer-varint":
        data[-48:-38] = b"\xff" * 10
        match = "corrupt checkpoint index"
    elif damage == "entry-varint":  # an 11-byte varint inside a block whose CRC is then made right again
        offset, size = _first_data_block(bytes(data))
        data[offset : offset + 11] = b"\xff" * 11
        _rewrite_block_crc(data, offset, size)
        match = "varint longer than 10 bytes"
    elif damage == "block-crc":
        offset, size = _first_data_block(bytes(data))
        data[offset + 5] ^= 0x40
        match = "CRC-32C"
    elif damage == "data-crc":
        culprit = d / "model.ckpt.data-00000-of-00001"
        blob = bytearray(culprit.read_bytes())
        blob[100] ^= 0x01
        culprit.write_bytes(bytes(blob))
        match = "fails its CRC-32C check"
    else:  # missing-index
        index.unlink()
        match = "cannot read the checkpoint index"
    if damage != "missing-index":
        index.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=match) as info:
        tf_bundle.read_tf_checkpoint(d / "model.ckpt")
    assert os.fspath(culprit) in str(info.value)


def test_data_crc_check_can_be_skipped(tmp_path):
    d = _copy_tf1(tmp_path)
    shard = d / "model.ckpt.data-00000-of-00001"
    blob = bytearray(shard.read_bytes())
    blob[100] ^= 0x01
    shard.write_bytes(bytes(blob))
    assert len(tf_bundle.read_tf_checkpoint(d / "model.ckpt", verify=False)) == len(READERS["tf1"]())


# -------------------------------------------------------------------------- TF1 names
@pytest.mark.parametrize(
    "tf_name,pt_name,transpose",
    [
        ("bert/embeddings/word_embeddings", "mobilebert.embeddings.word_embeddings.weight", False),
        (
            "bert/embeddings/embedding_transformation/kernel",
            "mobilebert.embeddings.embedding_transformation.weight",
            True,
        ),
        ("bert/embeddings/FakeLayerNorm/gamma", "mobilebert.embeddings.LayerNorm.weight", False),
        (
            "bert/encoder/layer_23/attention/self/query/kernel",
            "mobilebert.encoder.layer.23.attention.self.query.weight",
            True,
        ),
        (
            "bert/encoder/layer_0/ffn_layer_2/output/FakeLayerNorm/beta",
            "mobilebert.encoder.layer.0.ffn.2.output.LayerNorm.bias",
            False,
        ),
        (
            "bert/encoder/layer_0/bottleneck/input/dense/bias",
            "mobilebert.encoder.layer.0.bottleneck.input.dense.bias",
            False,
        ),
        ("bert/pooler/dense/kernel", "mobilebert.pooler.dense.weight", True),
        ("cls/predictions/extra_output_weights", "cls.predictions.dense.weight", True),
        ("cls/predictions/output_bias", "cls.predictions.bias", False),
        ("cls/predictions/transform/LayerNorm/gamma", "cls.predictions.transform.LayerNorm.weight", False),
        ("cls/seq_relationship/output_weights", "cls.seq_relationship.weight", False),
        # Google's SQuAD fine-tuned release: its (2, hidden) output layer is the question-answering head
        ("cls/squad/output_weights", "qa_outputs.weight", False),
        ("cls/squad/output_bias", "qa_outputs.bias", False),
    ],
)
def test_google_names_map_as_transformers_maps_them(tf_name, pt_name, transpose):
    assert tf_bundle.hf_name(tf_name) == (pt_name, transpose)


@pytest.mark.parametrize(
    "tf_name",
    [
        "global_step",
        "bert/encoder/layer_0/attention/self/query/kernel/adam_m",
        "bert/embeddings/word_embeddings/adam_v",
        "AdamWeightDecayOptimizer/beta1_power",
        "AdamWeightDecayOptimizer_1/x",
        "cls/squad/output_weights/adam_m",
    ],
)
def test_optimizer_state_is_skipped(tf_name):
    assert tf_bundle.hf_name(tf_name) == (None, False)


def test_tf1_fixture_holds_slots_the_reader_drops():
    raw = tf_bundle.read_bundle(fixture("tf1", "model.ckpt"))
    assert "global_step" in raw and raw["global_step"].dtype == np.int64
    assert any(n.endswith("/adam_m") for n in raw)
    mapped = READERS["tf1"]()
    assert not any("adam" in n or "global_step" in n for n in mapped)
    np.testing.assert_array_equal(mapped["cls.predictions.dense.weight"], raw["cls/predictions/extra_output_weights"].T)
    header = tf_bundle.read_index(fixture("tf1_sharded", "model.ckpt"))[""]
    assert header == {"num_shards": 3, "endianness": 0}


# --------------------------------------------------------------------------- h5 names
@pytest.mark.parametrize(
    "tf_name,pt_name,transpose",
    [
        (
            "tf_mobile_bert_for_pre_training/mobilebert/embeddings/word_embeddings/weight:0",
            "mobilebert.embeddings.word_embeddings.weight",
            False,
        ),
        (
            "tf_mobile_bert_for_pre_training/mobilebert/embeddings/position_embeddings/embeddings:0",
            "mobilebert.embeddings.position_embeddings.weight",
            False,
        ),
        (
            "tf_mobile_bert_for_pre_training/mobilebert/encoder/layer_._1/attention/self/query/kernel:0",
            "mobilebert.encoder.layer.1.attention.self.query.weight",
            True,
        ),
        (
            "tf_mobile_bert_for_pre_training/mobilebert/encoder/layer_._0/ffn.0/output/LayerNorm/weight:0",
            "mobilebert.encoder.layer.0.ffn.0.output.LayerNorm.weight",
            False,
        ),
        (
            "tf_mobile_bert_for_pre_training/predictions___cls/predictions/transform/LayerNorm/beta:0",
            "cls.predictions.transform.LayerNorm.bias",
            False,
        ),
        (
            "tf_mobile_bert_for_pre_training/predictions___cls/predictions/dense/weight:0",
            "cls.predictions.dense.weight",
            False,
        ),
        (
            "tf_mobile_bert_for_pre_training/seq_relationship___cls/seq_relationship/kernel:0",
            "cls.seq_relationship.weight",
            True,
        ),
        ("tf_mobile_bert_for_sequence_classification/classifier/bias:0", "classifier.bias", False),
    ],
)
def test_hf_tf_names_map_as_transformers_maps_them(tf_name, pt_name, transpose):
    assert tf_h5.hf_name(tf_name) == (pt_name, transpose)


def test_h5_without_h5py_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(CheckpointError, match=r"tf_model.h5: .*pip install h5py"):
        tf_h5.read_tf_h5(fixture("tf_model.h5"))


@needs_h5py
@pytest.mark.parametrize("damage", ["not-hdf5", "truncated", "no-layer-names"])
def test_damaged_h5_names_the_file(tmp_path, damage):
    path = tmp_path / "tf_model.h5"
    data = open(fixture("tf_model.h5"), "rb").read()
    if damage == "not-hdf5":
        path.write_bytes(b"not hdf5 at all" * 10)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        import h5py

        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(CheckpointError) as info:
        tf_h5.read_tf_h5(path)
    assert os.fspath(path) in str(info.value)


# ---------------------------------------------------------------------------- CRC-32C
def test_crc32c_known_values_and_input_kinds():
    assert checksum.crc32c(b"") == 0
    assert checksum.crc32c(b"123456789") == 0xE3069283  # the standard check value (RFC 3720)
    assert checksum.masked_crc32c(b"") == 0xA282EAD8  # mask(0) is LevelDB's delta
    data = np.random.default_rng(0).integers(0, 256, 3 * 65536 + 123, dtype=np.uint8)
    want = checksum.crc32c(data.tobytes())
    assert checksum.crc32c(memoryview(data.tobytes())) == want  # as read_bundle passes mmap slices
    assert checksum.crc32c(data) == want


def test_tf1_without_google_crc32c_names_the_file_and_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "google_crc32c", None)  # import fails as if not installed
    with pytest.raises(CheckpointError) as info:
        tf_bundle.read_tf_checkpoint(fixture("tf1", "model.ckpt"))
    assert fixture("tf1", "model.ckpt.index") in str(info.value)
    assert "mbengine[tf]" in str(info.value)


@needs_h5py
def test_h5_name_lists_split_into_chunks(tmp_path):
    """Keras splits an HDF5 attribute longer than 64 KiB into weight_names0, weight_names1, ... (the
    full-size model's always are): the chunks are read as one list, the same tensors as unsplit."""
    import h5py

    dst = tmp_path / "tf_model.h5"
    shutil.copy(fixture("tf_model.h5"), dst)
    with h5py.File(dst, "r+") as f:
        layers = list(f.attrs["layer_names"])
        del f.attrs["layer_names"]
        f.attrs["layer_names0"] = layers
        for layer in layers:
            group = f[layer]
            names = list(group.attrs["weight_names"])
            del group.attrs["weight_names"]
            for chunk, start in enumerate(range(0, len(names), 7)):
                group.attrs[f"weight_names{chunk}"] = names[start : start + 7]
    split, whole = tf_h5.read_tf_h5(dst), READERS["h5"]()
    assert len(whole) > 7 and split.keys() == whole.keys()
    for name, arr in whole.items():
        np.testing.assert_array_equal(split[name], arr)
