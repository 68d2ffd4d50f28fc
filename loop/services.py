"""Starting ``serve`` as the demo, the acceptance run and the benchmarks do: its settings (one
broker, one adapter store, one API key and admin token), the process, and waiting until it
answers ``/readyz``. The learner is started by :class:`loop.demo.Demo` only; each caller adds
its own settings on top of :func:`serving_env` (the demo its port, a benchmark its engine)."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from loop.processes import ManagedProcess, entry_point


def serving_env(
    *,
    model_dir: str,
    bootstrap: str,
    store: str,
    spool_dir: Path,
    adapter_cache_dir: Path,
    api_key: str,
    admin_token: str,
) -> dict[str, str]:
    """The ``SERVING_*`` settings every locally started ``serve`` needs; a fresh HMAC key each
    time (user hashes are only compared within one run)."""
    return {
        "SERVING_MODEL_DIR": model_dir,
        "SERVING_KAFKA_BOOTSTRAP": bootstrap,
        "SERVING_SPOOL_DIR": str(spool_dir),
        "SERVING_ADAPTER_STORE": store,
        "SERVING_ADAPTER_CACHE_DIR": str(adapter_cache_dir),
        "SERVING_API_KEYS": json.dumps([api_key]),
        "SERVING_ADMIN_TOKEN": admin_token,
        "SERVING_HMAC_KEY": secrets.token_hex(16),
    }


def start_serving(
    env: dict[str, str], log_path: Path, args: tuple[str, ...] = (), cwd: Path | None = None
) -> ManagedProcess:
    """``serve`` (with ``args``) in its own process and session, configured by ``env`` over this
    process's environment; stop it with :meth:`ManagedProcess.stop` (SIGTERM drains it)."""
    argv = [*entry_point("serve", "serving.cli"), *args]
    return ManagedProcess("serving", argv, env, log_path, cwd=cwd).start()


def wait_ready(root: str, serving: ManagedProcess, timeout: float) -> None:
    """Block until serving at ``root`` answers ``/readyz`` with 200; raise with the end of its
    log if it exits first or is not ready within ``timeout`` seconds."""
    import httpx  # here: ``rlhf-demo --help`` must not pay for importing it

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not serving.running:
            raise RuntimeError(f"serving exited with {serving.returncode}:\n{serving.log_tail()}")
        try:
            if httpx.get(f"{root}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"serving not ready after {timeout:.0f}s:\n{serving.log_tail()}")
