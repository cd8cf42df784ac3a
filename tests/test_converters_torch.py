"""pytorch_model.bin (zip, legacy, sharded) and sharded safetensors, read without torch and without trusting pickle."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

import mbengine
from mbengine.config import MobileBertConfig
from mbengine.converters.torch_bin import read_torch_bin
from mbengine.errors import CheckpointError

from .hf_util import random_head_model

CONFIG = MobileBertConfig(
    vocab_size=70,
    hidden_size=32,
    embedding_size=16,
    intra_bottleneck_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=20,
)
IDS = np.random.default_rng(0).integers(0, 70, (2, 7))


@pytest.fixture(scope="module")
def hf_model():
    return random_head_model("MobileBertForPreTraining", CONFIG, 12)


def logits_of(path):
    return mbengine.MobileBertForPreTraining.from_pretrained(path)(IDS).prediction_logits


@pytest.fixture(scope="module")
def reference(hf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("safetensors")
    hf_model.save_pretrained(path)
    return logits_of(path)


@pytest.mark.parametrize("how", ["zip", "legacy", "sharded-bin", "sharded-safetensors", "half", "bfloat16"])
def test_formats_give_the_same_outputs(hf_model, reference, tmp_path, how):
    state = hf_model.state_dict()
    hf_model.config.save_pretrained(tmp_path)
    if how in ("zip", "legacy"):  # what transformers 4 wrote (zip since torch 1.6, legacy before)
        torch.save(state, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=how == "zip")
    elif how == "sharded-bin":
        names = sorted(state)
        shards = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
        for shard, keys in shards.items():
            torch.save({k: state[k] for k in keys}, tmp_path / shard)
        index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
        (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    elif how == "sharded-safetensors":
        hf_model.save_pretrained(tmp_path, max_shard_size="40KB")
        assert os.path.isfile(tmp_path / "model.safetensors.index.json")
    else:
        dtype = torch.float16 if how == "half" else torch.bfloat16
        torch.save({k: v.to(dtype) for k, v in state.items()}, tmp_path / "pytorch_model.bin")
    got = logits_of(tmp_path)
    if how in ("half", "bfloat16"):  # rounded weights: close, not equal
        assert np.linalg.norm(got - reference) <= 0.05 * np.linalg.norm(reference)
    else:
        np.testing.assert_array_equal(got, reference)


def test_strided_and_shared_storages(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "t": base.t(),
        "col": base[:, 2],
        "offset": base[2:],
        "same": base,
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "ints": torch.arange(5),
    }
    for zip_format in (True, False):
        torch.save(tensors, tmp_path / "x.bin", _use_new_zipfile_serialization=zip_format)
        got = read_torch_bin(tmp_path / "x.bin")
        for name, value in tensors.items():
            np.testing.assert_array_equal(got[name], value.numpy(), err_msg=name)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("container", ["zip", "legacy", "builtins"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "pytorch_model.bin"
    if container == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps({"weight": _Payload(marker)}, protocol=2))
        path.write_bytes(buf.getvalue())
        match = r"refused to load the global (posix|os)\.system"
    elif container == "legacy":
        path.write_bytes(
            pickle.dumps(0x1950A86A20F9469CFC6C)
            + pickle.dumps(1001)
            + pickle.dumps({})
            + pickle.dumps({"weight": _Payload(marker)})
        )
        match = r"refused to load the global (posix|os)\.system"
    else:
        evil = b"cbuiltins\neval\n(Vopen('" + str(marker).encode() + b"', 'w')\ntR."
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("archive/data.pkl", evil)
        path.write_bytes(buf.getvalue())
        match = r"refused to load the global builtins\.eval"
    with pytest.raises(CheckpointError, match=match):
        read_torch_bin(path)
    assert not marker.exists()


# seeds of random bytes: 38 and 196 declare ~2**63-byte buffers (OverflowError in pickle), 50 and 215 huge
# but representable ones (MemoryError); both escaped as raw exceptions before they were caught
GARBAGE_SEEDS = [0, 38, 50, 196, 215]


@pytest.mark.parametrize(
    "damage",
    ["truncated-zip", "truncated-legacy", "empty", "missing-storage"] + [f"garbage-{seed}" for seed in GARBAGE_SEEDS],
)
def test_broken_files(tmp_path, damage):
    path = tmp_path / "pytorch_model.bin"
    tensors = {"w": torch.ones(64, 64)}
    if damage in ("truncated-zip", "truncated-legacy"):
        torch.save(tensors, path, _use_new_zipfile_serialization=damage == "truncated-zip")
        path.write_bytes(path.read_bytes()[:-300])
    elif damage.startswith("garbage"):  # (seeded: a fresh clone draws the same bytes)
        path.write_bytes(np.random.default_rng(int(damage.split("-")[1])).bytes(1000))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save(tensors, path)
        with zipfile.ZipFile(path) as z:
            entries = {n: z.read(n) for n in z.namelist() if "/data/" not in n}
        with zipfile.ZipFile(path, "w") as z:
            for n, data in entries.items():
                z.writestr(n, data)
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        read_torch_bin(path)
