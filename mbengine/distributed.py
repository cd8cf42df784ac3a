"""Run a pipeline over a corpus on a Dask cluster.

    from dask.distributed import Client
    from mbengine.distributed import map_pipeline

    client = Client("scheduler:8786")                 # or LocalCluster(...)
    results = map_pipeline(client, "feature-extraction", "/models/mobilebert", texts,
                           pooling="mean", normalize=True)

The model travels to the workers as a *path*: each worker process loads it
once (memory-mapped from its own disk or a shared file system) and keeps it for
every later chunk; no weights are pickled. Texts go out in numbered chunks and
come back keyed by their number, so the results are in input order whatever
the completion order, and a chunk that Dask re-runs after losing a worker
(``retries``) replaces nothing twice. Dask is an optional dependency
(``pip install "dask[distributed]"``).
"""

from __future__ import annotations

import os
import threading
import uuid

from .pipelines import BATCH_SIZE

_MODELS: dict = {}  # per worker process: (task, path, options) -> pipeline
_LOCK = threading.Lock()


def _pipeline(task: str, path: str, threads: int | None, batch_size: int, batch_tokens: int | str | None):
    from .pipelines import pipeline

    key = (task, path, threads, batch_size, batch_tokens)
    with _LOCK:
        pipe = _MODELS.get(key)
        if pipe is None:
            pipe = _MODELS[key] = pipeline(
                task, model=path, threads=threads, batch_size=batch_size, batch_tokens=batch_tokens
            )
    return pipe


def _run_chunk(index: int, texts: list, task: str, path: str, threads, batch: tuple, kwargs: dict):
    """Runs on a worker: (chunk index, results of the chunk); ``batch``: (batch_size, batch_tokens)."""
    pipe = _pipeline(task, path, threads, *batch)
    return index, pipe(list(texts), **kwargs)


def map_pipeline(
    client,
    task: str,
    model_path: str | os.PathLike,
    texts,
    *,
    chunk_size: int = 64,
    batch_size: int = BATCH_SIZE,
    batch_tokens: int | str | None = "auto",
    threads: int | None = 1,
    retries: int = 3,
    **kwargs,
) -> list:
    """Results of ``pipeline(task, model=model_path)(text, **kwargs)`` for every text, in input order.

    ``batch_size`` and ``batch_tokens`` are the workers' pipeline options (:func:`mbengine.pipeline`)."""
    try:
        from distributed import as_completed
    except ImportError:
        raise ImportError('mbengine.distributed needs Dask: pip install "dask[distributed]"') from None
    texts = list(texts)
    if not texts:
        return []
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    path = os.path.abspath(os.fspath(model_path))
    # One fresh name per job (keys of a finished job may still be known to the
    # scheduler, so they are never reused); the chunk number ends each key.
    job = uuid.uuid4().hex
    futures = []
    for index, start in enumerate(range(0, len(texts), chunk_size)):
        chunk = texts[start : start + chunk_size]
        futures.append(
            client.submit(
                _run_chunk,
                index,
                chunk,
                task,
                path,
                threads,
                (batch_size, batch_tokens),
                kwargs,
                key=f"mbengine-{task}-{job}-{index}",
                retries=retries,
                pure=False,
            )
        )
    results: dict[int, list] = {}
    for _, (index, chunk_results) in as_completed(futures, with_results=True):
        results[index] = chunk_results  # a re-run chunk lands on the same index
    missing = [i for i in range(len(futures)) if i not in results]
    if missing:
        raise RuntimeError(f"chunks {missing} never completed")
    out = []
    for index in range(len(futures)):
        part = results[index]
        out.extend(part if isinstance(part, list) else list(part))
    return out
