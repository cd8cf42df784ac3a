"""Hugging Face Hub model ids: ``from_pretrained("google/mobilebert-uncased")``.

A name that is not an existing local path but looks like a Hub repo id
(``name`` or ``org/name``, Hugging Face's characters) is fetched through
``huggingface_hub``, an optional dependency (``pip install "mbengine[hub]"``),
with its own download functions: the shared Hugging Face cache (``HF_HOME``,
``HF_HUB_CACHE``), its progress bars, ``HF_ENDPOINT``, ``HF_TOKEN`` and
``HF_HUB_OFFLINE`` behave as in ``transformers``.

Only what mbengine reads is downloaded: ``config.json``, the tokenizer files
the repo has, and one weights format, by preference ``model.safetensors``
(or its shards), then ``pytorch_model.bin`` (or its shards; read by the
restricted unpickler), then ``tf_model.h5``. Offline (``HF_HUB_OFFLINE=1``, or
the Hub unreachable) the cached snapshot of the revision is used. Every
failure is a :class:`~mbengine.errors.CheckpointError` saying what to install,
set or check. ``huggingface_hub`` is imported only here, inside functions.
"""

from __future__ import annotations

import json
import os
import re
import sys

from .errors import CheckpointError

CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
WEIGHTS_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
)  # in order of preference
INSTALL = 'pip install "mbengine[hub]"'
LOGIN = "`hf auth login` (older huggingface_hub: `huggingface-cli login`), or set HF_TOKEN"
# huggingface_hub's own rule (utils/_validators.py): "name" or "org/name", ASCII letters, digits, "-", "_", ".",
# starting and ending with a letter or digit, at most 96 characters each, no "--" or "..", no ".git" ending
_REPO_ID = re.compile(r"(\b[\w\-.]{1,96}\b/)?\b[\w\-.]{1,96}\b", re.ASCII)


def is_repo_id(name) -> bool:
    """Whether ``name`` has the form of a Hugging Face Hub repo id (it says nothing of whether it exists)."""
    return (
        isinstance(name, str)
        and _REPO_ID.fullmatch(name) is not None
        and "--" not in name
        and ".." not in name
        and not name.endswith(".git")
    )


def resolve(name_or_path: str | os.PathLike, revision: str | None = None) -> str:
    """A local checkpoint directory for ``name_or_path``: an existing path unchanged (a path always wins),
    else the Hub model id's snapshot in the Hugging Face cache, downloaded if needed.

    ``revision``: a branch, tag or commit hash of the Hub repo (default ``"main"``); ignored for a local path.
    """
    path = local_path(name_or_path, revision)
    if not os.path.exists(path):
        raise CheckpointError(
            f"no checkpoint at {path}: no such file or directory, and not a Hugging Face Hub model id (org/name)"
        )
    return path


def local_path(name_or_path: str | os.PathLike, revision: str | None = None, *, weights: bool = True) -> str:
    """As :func:`resolve`, but a name that is neither an existing path nor a Hub id comes back unchanged
    (for the caller's own "no such directory" error). ``weights=False``: a Hub id's tokenizer files only."""
    path = os.fspath(name_or_path)
    if revision is not None and not isinstance(revision, str):
        raise TypeError(f"revision must be a str (a branch, tag or commit hash) or None, got {type(revision).__name__}")
    if os.path.exists(path) or not is_repo_id(path):
        return path
    return download(path, revision, weights=weights)


def choose_files(files, what: str = "the repo", weights: bool = True) -> list[str]:
    """The files of a repo listing to download: config.json, the tokenizer files present and the preferred
    weights file (for a sharded checkpoint its index; :func:`download` adds the shards it names).
    ``weights=False``: the tokenizer files (and config.json if there is one)."""
    present = set(files)
    shown = ", ".join(sorted(present)[:20]) or "none"
    tokenizer = [name for name in TOKENIZER_FILES if name in present]
    if not weights:
        if not {"tokenizer.json", "vocab.txt"} & present:
            raise CheckpointError(f"{what} has no tokenizer.json or vocab.txt (its files: {shown})")
        return [CONFIG_FILE] * (CONFIG_FILE in present) + tokenizer
    if CONFIG_FILE not in present:
        raise CheckpointError(f"{what} has no config.json: not a Transformers model checkpoint (its files: {shown})")
    chosen = next((name for name in WEIGHTS_FILES if name in present), None)
    if chosen is None:
        raise CheckpointError(
            f"{what} has no weights file that mbengine reads (its files: {shown})",
            hint="mbengine reads model.safetensors, pytorch_model.bin, tf_model.h5 and their "
            "sharded forms (*.index.json + shards)",
        )
    return [CONFIG_FILE, *tokenizer, chosen]


def _hub():
    """huggingface_hub and its exception classes (module names moved between versions)."""
    import huggingface_hub  # (an ImportError: the caller says what to install)
    from huggingface_hub import constants, utils

    try:
        from huggingface_hub import errors
    except ImportError:  # older huggingface_hub: the exceptions live in utils only
        errors = None

    class _Never(Exception):
        pass

    names = (
        "GatedRepoError",
        "RepositoryNotFoundError",
        "RevisionNotFoundError",
        "EntryNotFoundError",
        "LocalEntryNotFoundError",
        "HfHubHTTPError",
        "OfflineModeIsEnabled",
    )
    found = {n: getattr(errors, n, None) or getattr(utils, n, None) or _Never for n in names}
    return huggingface_hub, constants, found


def _connection_errors() -> tuple:
    """The exceptions of a Hub that cannot be reached, for the HTTP library huggingface_hub uses."""
    errors = [ConnectionError, TimeoutError]  # (OfflineModeIsEnabled is a ConnectionError)
    for module, names in (
        ("requests", ("ConnectionError", "Timeout")),
        ("httpx", ("TransportError",)),
        ("httpx2", ("TransportError",)),
    ):
        mod = sys.modules.get(module)
        errors += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return tuple(errors)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def download(repo_id: str, revision: str | None = None, *, weights: bool = True) -> str:
    """The local snapshot directory of Hub model ``repo_id`` at ``revision``, downloading what it lacks
    (module doc). Offline or with the Hub unreachable, the cached snapshot. ``weights=False``: the
    tokenizer files (and config.json) only."""
    what = repo_id if revision is None else f"{repo_id} (revision {revision})"
    try:
        hub, constants, err = _hub()
    except ImportError:
        raise CheckpointError(
            f"{repo_id} is not a local directory; to load it as a Hugging Face Hub model id, "
            f"install huggingface_hub: {INSTALL}"
        ) from None
    revision = revision or "main"
    offline = getattr(constants, "is_offline_mode", lambda: constants.HF_HUB_OFFLINE)()
    if offline:
        return _cached(
            hub,
            constants,
            err,
            repo_id,
            revision,
            what,
            weights,
            "HF_HUB_OFFLINE is set",
            "unset HF_HUB_OFFLINE and run once online to download it",
        )
    endpoint = constants.ENDPOINT
    unreachable = _connection_errors()
    try:
        info = hub.HfApi().model_info(repo_id, revision=revision, timeout=getattr(constants, "HF_HUB_ETAG_TIMEOUT", 10))
    except unreachable as e:
        return _cached(
            hub,
            constants,
            err,
            repo_id,
            revision,
            what,
            weights,
            f"the Hub ({endpoint}) cannot be reached ({_first_line(e)})",
            "check your connection (and HF_ENDPOINT, proxy settings), or set HF_HUB_OFFLINE=1 to use the cache only",
        )
    except Exception as e:  # noqa: BLE001 (mapped to what the user should check, or re-raised)
        raise _hub_error(e, err, repo_id, revision, what, endpoint) from None
    files = [s.rfilename for s in (info.siblings or [])]
    chosen = choose_files(files, f"{what} on the Hugging Face Hub", weights)
    try:
        first = hub.hf_hub_download(repo_id, chosen[0], revision=revision)  # (writes refs/<revision>)
        snapshot = os.path.dirname(first)
        commit = os.path.basename(snapshot)  # the rest from the very same commit
        for name in chosen[1:]:
            local = hub.hf_hub_download(repo_id, name, revision=commit)
            if name.endswith(".index.json"):
                for shard in _shards(local, name, set(files), what):
                    hub.hf_hub_download(repo_id, shard, revision=commit)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001
        if isinstance(e, unreachable + (err["LocalEntryNotFoundError"],)):
            raise CheckpointError(
                f"downloading {what} from the Hugging Face Hub ({endpoint}) failed: {_first_line(e)}",
                hint="check your connection and run again: what was downloaded is kept in the cache",
            ) from None
        raise _hub_error(e, err, repo_id, revision, what, endpoint) from None
    return snapshot


def _shards(index_file: str, name: str, files: set[str], what: str) -> list[str]:
    """The shard files a ``*.index.json`` names (each must be in the repo)."""
    try:
        with open(index_file, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{name} of {what} is not a valid index ({_first_line(e)})") from None
    missing = [s for s in shards if not isinstance(s, str) or s not in files]
    if missing:
        raise CheckpointError(f"{name} of {what} names shards the repo does not have: {missing[:5]}")
    return shards


def _cached(hub, constants, err, repo_id, revision, what, weights, reason, advice) -> str:
    """The cached snapshot of ``repo_id`` at ``revision``, or an error saying why it could not be fetched."""
    cache = constants.HF_HUB_CACHE
    snapshot = None
    for name in (CONFIG_FILE,) if weights else (CONFIG_FILE, *TOKENIZER_FILES):
        try:
            snapshot = os.path.dirname(hub.hf_hub_download(repo_id, name, revision=revision, local_files_only=True))
            break
        except (
            FileNotFoundError,
            err["EntryNotFoundError"],
            err["LocalEntryNotFoundError"],
            err["OfflineModeIsEnabled"],
        ):
            pass
    if snapshot is None:
        raise CheckpointError(
            f"{what} is neither a local directory nor in the Hugging Face cache ({cache}), and {reason}",
            hint=f"{advice}; or give a local checkpoint directory",
        )
    if weights and not any(os.path.isfile(os.path.join(snapshot, name)) for name in WEIGHTS_FILES):
        raise CheckpointError(
            f"the cached snapshot of {what} ({snapshot}) has no weights file, and {reason}",
            hint=f"{advice} (an interrupted download, or another program cached only some files)",
        )
    return snapshot


def _hub_error(e: Exception, err: dict, repo_id: str, revision: str, what: str, endpoint: str) -> Exception:
    """A huggingface_hub exception as a CheckpointError that says what to check (``e`` itself if unknown)."""
    if isinstance(e, err["GatedRepoError"]):
        return CheckpointError(
            f"{repo_id} is a gated model on the Hugging Face Hub: its files need an account that accepted its terms",
            hint=f"accept them at {endpoint}/{repo_id}, then log in as that account: {LOGIN}",
        )
    if isinstance(e, err["RepositoryNotFoundError"]):
        return CheckpointError(
            f"no model {repo_id} on the Hugging Face Hub ({endpoint}), and no local directory of that name",
            hint=f"check the id (org/name, as on {endpoint}); a private repo needs a login: {LOGIN}",
        )
    if isinstance(e, err["RevisionNotFoundError"]):
        return CheckpointError(
            f"{repo_id} has no revision {revision!r} on the Hugging Face Hub",
            hint="check the branch, tag or commit hash given as revision (--revision)",
        )
    if isinstance(e, (err["HfHubHTTPError"], err["EntryNotFoundError"])):
        return CheckpointError(
            f"the Hugging Face Hub ({endpoint}) could not serve {what}: {_first_line(e)}",
            hint="try again later; check HF_ENDPOINT and your token (HF_TOKEN)",
        )
    return e
