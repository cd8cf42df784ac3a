"""Hugging Face Hub model ids (mbengine.hub), offline.

huggingface_hub reads HF_HUB_OFFLINE, HF_HUB_CACHE and HF_ENDPOINT when it is
imported, so everything that goes through it runs in a subprocess with its
environment set:

- a cache in huggingface_hub's on-disk layout (``models--org--name/refs/<ref>``,
  ``blobs/``, ``snapshots/<commit>/`` symlinks) of two small random masked-LM
  checkpoints: with HF_HUB_OFFLINE=1 a model id loads (model, tokenizer,
  pipeline, CLI) exactly as the snapshot directory does, ``revision=`` picks
  the other snapshot by ref or commit hash, an id that is not cached is a
  clear error;
- a local HTTP server standing in for the Hub (HF_ENDPOINT), serving
  tests/fixtures/tiny's checkpoint in several formats: only config, tokenizer
  files and the preferred weights format are downloaded (the server's request
  log says so), into HF_HUB_CACHE in its layout; with the server stopped the
  cache serves them (offline, and with the Hub unreachable); unknown, gated
  repos, unknown revisions and repos without weights are clear errors.

Without huggingface_hub (sys.modules entry None) a Hub id says what to
install, and local paths load as before.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

import mbengine
from mbengine import cli, hub
from mbengine.config import MobileBertConfig
from mbengine.errors import CheckpointError

TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tiny")
SMALL = dict(
    vocab_size=300,
    hidden_size=32,
    embedding_size=16,
    intra_bottleneck_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=32,
)
COMMIT_A, COMMIT_B = hashlib.sha1(b"a").hexdigest(), hashlib.sha1(b"b").hexdigest()
TEXT = "the [MASK] is blue ."


def run(code: str, env: dict, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter with the Hugging Face variables of ``env`` only; the JSON it prints
    last."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_")) and k not in ("TRANSFORMERS_OFFLINE", "TRANSFORMERS_CACHE")
    }
    clean.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", NUMBA_NUM_THREADS="1", **env)
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=env.get("HF_HOME") or tempfile.gettempdir(),
    )  # (not the source tree)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_cache(cache, repo_id: str, snapshots: dict, refs: dict) -> None:
    """``snapshots`` ({commit: directory}) and ``refs`` ({name: commit}) in huggingface_hub's cache layout:
    files in blobs/ named by their hash, snapshots/<commit>/ of relative symlinks to them."""
    folder = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    for commit, source in snapshots.items():
        os.makedirs(os.path.join(folder, "snapshots", commit))
        os.makedirs(os.path.join(folder, "blobs"), exist_ok=True)
        for name in sorted(os.listdir(source)):
            with open(os.path.join(source, name), "rb") as f:
                data = f.read()
            blob = hashlib.sha256(data).hexdigest()
            with open(os.path.join(folder, "blobs", blob), "wb") as f:
                f.write(data)
            os.symlink(os.path.join("..", "..", "blobs", blob), os.path.join(folder, "snapshots", commit, name))
    os.makedirs(os.path.join(folder, "refs"), exist_ok=True)
    for ref, commit in refs.items():
        with open(os.path.join(folder, "refs", ref), "w") as f:
            f.write(commit)


# ---------------------------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize(
    "name, ok",
    [
        ("google/mobilebert-uncased", True),
        ("bert-base-uncased", True),
        ("org/name.v2_x", True),
        ("a", True),
        ("a/b/c", False),
        ("/abs/path", False),
        ("./rel", False),
        ("org/", False),
        ("org/na--me", False),
        ("org/na..me", False),
        ("org/name.git", False),
        ("org/café", False),
        ("", False),
        ("a [MASK]", False),
        ("-x", False),
        ("x" * 97, False),
    ],
)
def test_repo_id_form(name, ok):
    assert hub.is_repo_id(name) is ok


@pytest.mark.parametrize(
    "files, weights",
    [
        (["model.safetensors", "pytorch_model.bin", "tf_model.h5"], "model.safetensors"),
        (
            ["model.safetensors.index.json", "model-00001-of-00002.safetensors", "pytorch_model.bin"],
            "model.safetensors.index.json",
        ),
        (["pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"], "pytorch_model.bin"),
        (["pytorch_model.bin.index.json", "tf_model.h5"], "pytorch_model.bin.index.json"),
        (["tf_model.h5", "flax_model.msgpack", "rust_model.ot"], "tf_model.h5"),
    ],
)
def test_choose_files_prefers_safetensors_then_bin_then_h5(files, weights):
    listing = [
        "config.json",
        ".gitattributes",
        "README.md",
        "vocab.txt",
        "tokenizer.json",
        "merges.txt",
        "special_tokens_map.json",
        "onnx/model.onnx",
        *files,
    ]
    assert hub.choose_files(listing) == [
        "config.json",
        "tokenizer.json",
        "vocab.txt",
        "special_tokens_map.json",
        weights,
    ]
    assert hub.choose_files(listing, weights=False) == [
        "config.json",
        "tokenizer.json",
        "vocab.txt",
        "special_tokens_map.json",
    ]


def test_choose_files_errors():
    with pytest.raises(
        CheckpointError,
        match=r"org/x has no weights file that mbengine reads \(its files: "
        r"README.md, config.json, flax_model.msgpack\)",
    ):
        hub.choose_files(["config.json", "README.md", "flax_model.msgpack"], "org/x")
    with pytest.raises(CheckpointError, match="has no config.json: not a Transformers model checkpoint"):
        hub.choose_files(["model.safetensors"])
    with pytest.raises(CheckpointError, match="has no tokenizer.json or vocab.txt"):
        hub.choose_files(["config.json", "model.safetensors"], weights=False)


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """huggingface_hub not importable (as without the hub extra), in a directory with no org/ folder."""
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.chdir(tmp_path)


def test_local_paths_never_touch_the_hub(no_hub, tmp_path):
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert hub.resolve("org/name") == "org/name"  # a path wins over an id
    assert hub.local_path(tmp_path / "absent") == str(tmp_path / "absent")  # not an id: the caller's error
    with pytest.raises(CheckpointError, match="no checkpoint at /no/such/dir: no such file or directory"):
        hub.resolve("/no/such/dir")
    with pytest.raises(TypeError, match="revision must be a str"):
        hub.resolve("org/name", revision=3)


# --------------------------------------------------------------------------------------- no huggingface_hub


def test_without_huggingface_hub_an_id_says_what_to_install(no_hub, checkpoints):
    message = (
        "org/name is not a local directory; to load it as a Hugging Face Hub model id, install "
        'huggingface_hub: pip install "mbengine[hub]"'
    )
    for load in (
        lambda: mbengine.MobileBertForMaskedLM.from_pretrained("org/name"),
        lambda: mbengine.MobileBertTokenizer.from_pretrained("org/name"),
        lambda: mbengine.pipeline("fill-mask", model="org/name"),
    ):
        with pytest.raises(CheckpointError) as e:
            load()
        assert str(e.value) == message
    model = mbengine.MobileBertForMaskedLM.from_pretrained(checkpoints["a"], threads=1)  # local paths still load
    assert model(np.array([[2, 10, 3]])).logits.shape == (1, 3, SMALL["vocab_size"])
    assert mbengine.pipeline("fill-mask", model=checkpoints["a"], threads=1)(TEXT, top_k=1)


def test_importing_mbengine_does_not_import_huggingface_hub():
    code = (
        "import sys, mbengine, mbengine.hub, mbengine.config, mbengine.modeling, mbengine.tokenizer, "
        "mbengine.pipelines, mbengine.cli, json; mbengine.MobileBertConfig; mbengine.pipeline; "
        "print(json.dumps('huggingface_hub' in sys.modules))"
    )
    assert run(code, {}) is False


# ------------------------------------------------------------------------------- an offline cache of two commits


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two small random masked-LM checkpoints (a, b) with one vocab.txt."""
    root = tmp_path_factory.mktemp("hub-checkpoints")
    vocab = "\n".join(cli.demo_vocabulary(SMALL["vocab_size"])) + "\n"
    out = {}
    for seed, name in enumerate("ab"):
        config = MobileBertConfig(**SMALL)
        config.extra["architectures"] = ["MobileBertForMaskedLM"]
        out[name] = cli.random_checkpoint(str(root / name), config, seed=seed, head="masked_lm")
        (root / name / "vocab.txt").write_text(vocab)
    return out


OFFLINE = r"""
import contextlib, io, json, sys
import numpy as np
import mbengine
from mbengine import cli
from mbengine.errors import CheckpointError

A, B, TEXT, COMMIT_B = sys.argv[1:5]
ids = np.array([[2, 10, 11, 12, 3]])
out = {}


def logits(path, **kw):
    model = mbengine.MobileBertForMaskedLM.from_pretrained(path, threads=1, **kw)
    return model(ids).logits, model.source


def error(load):
    try:
        load()
    except CheckpointError as e:
        return str(e)
    return None


def command(*argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli.main(list(argv))
    return [status, stdout.getvalue(), stderr.getvalue()]


a, _ = logits(A)
b, _ = logits(B)
for key, kw in (("main", {}), ("ref_main", {"revision": "main"}), ("ref_v2", {"revision": "v2"}),
                ("commit_b", {"revision": COMMIT_B})):
    got, source = logits("org/name", **kw)
    out[key] = {"equals_a": bool(np.array_equal(got, a)), "equals_b": bool(np.array_equal(got, b)),
                "source": source}
tok, local = mbengine.MobileBertTokenizer.from_pretrained("org/name"), mbengine.MobileBertTokenizer.from_pretrained(A)
out["tokenizer"] = [tok(TEXT)["input_ids"].tolist(), local(TEXT)["input_ids"].tolist()]
fill = lambda model, **kw: mbengine.pipeline("fill-mask", model=model, threads=1, **kw)(TEXT, top_k=3)
out["pipeline"] = [fill("org/name"), fill(A), fill("org/name", revision="v2"), fill(B)]
out["errors"] = {"not cached": error(lambda: mbengine.MobileBertModel.from_pretrained("org/other")),
                 "no such ref": error(lambda: mbengine.MobileBertModel.from_pretrained("org/name", revision="v3")),
                 "pipeline": error(lambda: mbengine.pipeline("fill-mask", model="org/other")),
                 "tokenizer": error(lambda: mbengine.MobileBertTokenizer.from_pretrained("org/other"))}
out["cli"] = {"id": command("fill-mask", "org/name", TEXT, "--json", "--threads", "1"),
              "path": command("fill-mask", A, TEXT, "--json", "--threads", "1"),
              "revision": command("fill-mask", "org/name", TEXT, "--json", "--threads", "1", "--revision", "v2"),
              "path_b": command("fill-mask", B, TEXT, "--json", "--threads", "1"),
              "info": command("info", "org/name", "--revision", COMMIT_B),
              "unknown": command("fill-mask", "org/other", TEXT)}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def offline(checkpoints, tmp_path_factory):
    """One subprocess, HF_HUB_OFFLINE=1, over a cache with org/name at commits A (main) and B (v2)."""
    home = tmp_path_factory.mktemp("hf-home")
    cache = home / "hub"
    write_cache(
        cache, "org/name", {COMMIT_A: checkpoints["a"], COMMIT_B: checkpoints["b"]}, {"main": COMMIT_A, "v2": COMMIT_B}
    )
    results = run(
        OFFLINE,
        {"HF_HOME": str(home), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
        checkpoints["a"],
        checkpoints["b"],
        TEXT,
        COMMIT_B,
    )
    return results, str(cache)


def test_offline_model_id_loads_the_cached_snapshot(offline):
    results, cache = offline
    snapshots = os.path.join(cache, "models--org--name", "snapshots")
    assert (
        results["main"]
        == results["ref_main"]
        == {"equals_a": True, "equals_b": False, "source": os.path.join(snapshots, COMMIT_A)}
    )
    assert (
        results["ref_v2"]
        == results["commit_b"]
        == {"equals_a": False, "equals_b": True, "source": os.path.join(snapshots, COMMIT_B)}
    )
    ours, local = results["tokenizer"]
    assert ours == local
    by_id, by_path, by_id_v2, by_path_b = results["pipeline"]
    assert by_id == by_path and by_id_v2 == by_path_b and by_id != by_id_v2


def test_offline_and_not_cached_is_a_clear_error(offline):
    results, cache = offline
    errors = results["errors"]
    assert errors["not cached"] == (
        f"org/other is neither a local directory nor in the Hugging Face cache ({cache}), and HF_HUB_OFFLINE is "
        "set\n  unset HF_HUB_OFFLINE and run once online to download it; or give a local checkpoint directory"
    )
    assert errors["no such ref"].startswith(
        "org/name (revision v3) is neither a local directory nor in the "
        f"Hugging Face cache ({cache}), and HF_HUB_OFFLINE is set"
    )
    assert errors["pipeline"] == errors["tokenizer"] == errors["not cached"]


def test_cli_takes_a_model_id(offline):
    results, cache = offline
    c = results["cli"]
    assert c["id"][0] == 0 and c["id"][1] == c["path"][1] and c["id"][1].strip(), c["id"]
    assert c["revision"][0] == 0 and c["revision"][1] == c["path_b"][1] != c["id"][1]
    assert c["info"][0] == 0 and os.path.join(cache, "models--org--name", "snapshots", COMMIT_B) in c["info"][1]
    status, out, err = c["unknown"]
    assert status == 1 and not out
    assert err == (
        f"mbengine: error: org/other is neither a local directory nor in the Hugging Face cache ({cache}), "
        "and HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE and run once online to download it; or give a "
        "local checkpoint directory\n"
    )


# ------------------------------------------------------------------------------------ a local stand-in for the Hub


class FakeHub:
    """The Hub endpoints huggingface_hub's model_info and hf_hub_download use, over ``repos``:
    {repo_id: {"refs": {name: commit}, "commits": {commit: {filename: bytes}}, "gated": bool}}.

    GET /api/models/{repo}[/revision/{rev}]: id, sha, siblings. HEAD and GET /{repo}/resolve/{rev}/{file}:
    the file, with X-Repo-Commit and ETag. Errors carry the X-Error-Code the Hub sends (RepoNotFound,
    RevisionNotFound, EntryNotFound, GatedRepo). ``log`` holds (method, path) of every request.
    """

    def __init__(self, repos):
        self.repos, self.log = repos, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                fake.answer(self, head=True)

            def do_GET(self):
                fake.answer(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    @staticmethod
    def send(h, status, body, headers, head):
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def error(self, h, status, code, head, commit=None):
        headers = {"X-Error-Code": code, "Content-Type": "application/json"}
        if commit:
            headers["X-Repo-Commit"] = commit
        self.send(h, status, json.dumps({"error": code}).encode(), headers, head)

    def answer(self, h, head):
        path = unquote(urlsplit(h.path).path)
        self.log.append(("HEAD" if head else "GET", path))
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if not (api or resolve):
            return self.error(h, 404, "NotFound", head)
        repo, rev = (api.group(1), api.group(2) or "main") if api else resolve.groups()[:2]
        if repo not in self.repos:
            return self.error(h, 404, "RepoNotFound", head)
        r = self.repos[repo]
        commit = r["refs"].get(rev, rev if rev in r["commits"] else None)
        if commit is None:
            return self.error(h, 404, "RevisionNotFound", head)
        files = r["commits"][commit]
        if api:
            info = {
                "id": repo,
                "modelId": repo,
                "sha": commit,
                "private": False,
                "disabled": False,
                "gated": "manual" if r.get("gated") else False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "lastModified": "2024-01-01T00:00:00.000Z",
                "library_name": "transformers",
                "siblings": [{"rfilename": name} for name in sorted(files)],
            }
            return self.send(h, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head)
        if r.get("gated"):  # the listing is public, the files are not
            return self.error(h, 403, "GatedRepo", head)
        name = resolve.group(3)
        if name not in files:
            return self.error(h, 404, "EntryNotFound", head, commit)
        body = files[name]
        self.send(
            h,
            200,
            body,
            {
                "X-Repo-Commit": commit,
                "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
                "Content-Type": "application/octet-stream",
            },
            head,
        )


def tiny(*names, folder=TINY) -> dict:
    out = {}
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = f.read()
    return out


def commit(n: int) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()


def repo(files: dict, n: int, gated=False, refs=("main",)) -> dict:
    return {"refs": {ref: commit(n) for ref in refs}, "commits": {commit(n): files}, "gated": gated}


VOCAB = "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(55)]).encode()
OTHER = {
    "README.md": b"# tiny",
    ".gitattributes": b"*.bin filter=lfs",
    "flax_model.msgpack": b"\0" * 64,
    "vocab.txt": VOCAB,
    "tokenizer_config.json": b'{"do_lower_case": true}',
}
SHARDS = os.path.join(TINY, "sharded_safetensors")
REPOS = {
    "org/all": repo({**tiny("config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5"), **OTHER}, 1),
    "org/bin": repo({**tiny("config.json", "pytorch_model.bin", "tf_model.h5"), **OTHER}, 2, refs=("main", "v1")),
    "org/sharded": repo(
        {**tiny("config.json", "pytorch_model.bin"), **OTHER, **tiny(*sorted(os.listdir(SHARDS)), folder=SHARDS)}, 3
    ),
    "org/h5": repo({**tiny("config.json", "tf_model.h5"), **OTHER}, 4),
    "org/tok": repo({**tiny("config.json", "model.safetensors"), "vocab.txt": VOCAB}, 5),
    "org/gated": repo({**tiny("config.json", "model.safetensors"), **OTHER}, 6, gated=True),
    "org/noweights": repo({**tiny("config.json"), **OTHER}, 7),
}

ONLINE = r"""
import json, os, sys
from mbengine import hub
from mbengine.errors import CheckpointError
from mbengine.tokenizer import MobileBertTokenizer

out = {"files": {}, "errors": {}}
for repo_id, revision in (("org/all", None), ("org/bin", "v1"), ("org/sharded", None), ("org/h5", None)):
    snapshot = hub.resolve(repo_id, revision)
    out["files"][repo_id] = [snapshot, sorted(os.listdir(snapshot))]
out["tokenizer"] = MobileBertTokenizer.from_pretrained("org/tok").source
for key, repo_id, revision in (("unknown", "org/unknown", None), ("gated", "org/gated", None),
                               ("revision", "org/all", "nope"), ("noweights", "org/noweights", None)):
    try:
        hub.resolve(repo_id, revision)
    except CheckpointError as e:
        out["errors"][key] = str(e)
print(json.dumps(out))
"""

AFTER = r"""
import json, sys
import numpy as np
import mbengine
from mbengine import hub
from mbengine.errors import CheckpointError

TINY = sys.argv[1]
ids = np.array([[2, 10, 11, 12, 3]])
hidden = lambda path, **kw: mbengine.MobileBertModel.from_pretrained(path, threads=1, add_pooling_layer=False,
                                                                      **kw)(ids).last_hidden_state
want = hidden(TINY)
out = {"close": {}}
for repo_id, revision in (("org/all", None), ("org/bin", "v1"), ("org/sharded", None), ("org/h5", None)):
    out["close"][repo_id] = float(np.abs(hidden(repo_id, revision=revision) - want).max() / np.abs(want).max())
try:
    hub.resolve("org/unknown")
except CheckpointError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


def test_download_from_a_stand_in_hub(tmp_path):
    home, cache = tmp_path / "hf-home", tmp_path / "hf-home" / "hub"
    home.mkdir()
    with FakeHub(REPOS) as fake:
        env = {"HF_HOME": str(home), "HF_HUB_CACHE": str(cache), "HF_ENDPOINT": fake.url}
        results = run(ONLINE, env)
    gets = {}
    for method, path in fake.log:
        m = re.fullmatch(r"/(org/[^/]+)/resolve/[^/]+/(.+)", path)
        if m and method == "GET":
            gets.setdefault(m.group(1), []).append(m.group(2))
    # only config, tokenizer files and the preferred weights format travel
    assert sorted(gets["org/all"]) == ["config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
    assert sorted(gets["org/bin"]) == ["config.json", "pytorch_model.bin", "tokenizer_config.json", "vocab.txt"]
    assert sorted(gets["org/sharded"]) == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    assert sorted(gets["org/h5"]) == ["config.json", "tf_model.h5", "tokenizer_config.json", "vocab.txt"]
    assert sorted(gets["org/tok"]) == ["config.json", "vocab.txt"]  # a tokenizer needs no weights
    assert not any(p.endswith(("README.md", ".gitattributes", "flax_model.msgpack")) for _, p in fake.log)
    assert "org/gated" not in gets and "org/noweights" not in gets
    # in huggingface_hub's cache layout
    for repo_id, (snapshot, files) in results["files"].items():
        folder = cache / ("models--" + repo_id.replace("/", "--"))
        sha = next(iter(REPOS[repo_id]["commits"]))
        assert snapshot == str(folder / "snapshots" / sha)
        assert sorted(files) == sorted(gets[repo_id])
        for name in files:
            link = folder / "snapshots" / sha / name
            assert link.is_symlink() and link.resolve().parent == folder / "blobs"
            assert link.read_bytes() == REPOS[repo_id]["commits"][sha][name]
    assert (cache / "models--org--all" / "refs" / "main").read_text() == commit(1)
    assert (cache / "models--org--bin" / "refs" / "v1").read_text() == commit(2)
    assert results["tokenizer"] == str(cache / "models--org--tok" / "snapshots" / commit(5) / "vocab.txt")

    errors, url = results["errors"], fake.url
    assert errors["unknown"] == (
        f"no model org/unknown on the Hugging Face Hub ({url}), and no local directory of that name\n"
        f"  check the id (org/name, as on {url}); a private repo needs a login: `hf auth login` (older "
        "huggingface_hub: `huggingface-cli login`), or set HF_TOKEN"
    )
    assert errors["gated"] == (
        "org/gated is a gated model on the Hugging Face Hub: its files need an account that accepted its terms\n"
        f"  accept them at {url}/org/gated, then log in as that account: `hf auth login` (older huggingface_hub: "
        "`huggingface-cli login`), or set HF_TOKEN"
    )
    assert errors["revision"] == (
        "org/all has no revision 'nope' on the Hugging Face Hub\n"
        "  check the branch, tag or commit hash given as revision (--revision)"
    )
    assert errors["noweights"].startswith(
        "org/noweights on the Hugging Face Hub has no weights file that mbengine reads (its files: .gitattributes, "
        "README.md, config.json, flax_model.msgpack, tokenizer_config.json, vocab.txt)\n  mbengine reads "
        "model.safetensors, pytorch_model.bin, tf_model.h5"
    )

    # the server is gone: offline, and with the Hub unreachable (the same address, nothing listening), the
    # cache serves every format, with the same values as the fixture read directly
    for extra in ({"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": fake.url}):
        after = run(AFTER, {"HF_HOME": str(home), "HF_HUB_CACHE": str(cache), **extra}, TINY)
        assert max(after["close"].values()) < 1e-5, after["close"]
        assert sorted(after["close"]) == ["org/all", "org/bin", "org/h5", "org/sharded"]
        reason = "HF_HUB_OFFLINE is set" if extra.get("HF_HUB_OFFLINE") else f"the Hub ({fake.url}) cannot be reached ("
        assert after["error"].startswith(
            f"org/unknown is neither a local directory nor in the Hugging Face cache ({cache}), and {reason}"
        ), after["error"]
