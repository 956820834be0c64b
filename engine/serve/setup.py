"""What a server needs before it serves: its API key read and its bind checked, and a worker per bundle
(`star serve`, the app's server mode and the serving benchmark all start here)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from ..errors import StarError
from ..honesty import MaskGuard

LOOPBACK_NAMES = ("localhost",)


class ServeConfigError(StarError):
    pass


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_api_key(path: str | None) -> str | None:
    """The key in `path` (None: no key), refused in one line when unreadable or too weak."""
    if path is None:
        return None
    try:
        key = Path(path).read_text().strip()
    except OSError as exc:
        raise ServeConfigError(f"--api-key-file {path}: {exc.strerror or exc}") from None
    if not key or len(key) < 16 or any(c.isspace() for c in key):
        raise ServeConfigError(f"--api-key-file {path}: the key must be one line of at least 16 characters "
                               "without spaces (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return key


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to serve other machines without a key."""
    if not is_loopback(host) and api_key is None:
        raise ServeConfigError(f"--host {host} would let other machines use the model without a key; give "
                               "--api-key-file FILE (clients send the key in the Token header) or bind to 127.0.0.1")


def model_ids(specs: list[str]) -> list[tuple[str, str | None]]:
    """--bundle values ('DIR' or 'ID=DIR') -> (id or None, folder); none given: the bundled nano model."""
    out = []
    for spec in specs or [None]:
        if spec and "=" in spec and re.fullmatch(r"[A-Za-z0-9_.-]+", spec.split("=", 1)[0]):
            name, folder = spec.split("=", 1)
            out.append((name, folder))
        else:
            out.append((None, spec))
    return out


def load_workers(specs: list[str], *, device: str, threads: int | None, max_samples: int, max_new_tokens: int,
                 queue_size: int, verify, mask_guard: MaskGuard = MaskGuard()):
    """{model id: ModelWorker} for --bundle values ('DIR' or 'ID=DIR'), each bundle loaded once; a failure
    shuts the workers already started."""
    from ..pipeline import load_reasoner
    from .app import model_info
    from .requests import PredictParams
    from .worker import ModelWorker

    workers = {}
    try:
        for name, folder in model_ids(specs):
            reasoner = load_reasoner(folder, device=device, threads=threads, max_samples=max_samples,
                                     max_new_tokens=max_new_tokens, verify=verify, mask_guard=mask_guard)
            name = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", reasoner.bundle.get("name") or "star").strip("-") or "star"
            if name in workers:
                reasoner.close()
                raise ServeConfigError(f"two bundles are both called {name!r}; name them: --bundle ID=DIR")
            params = {**PredictParams.defaults(), "max_samples": max_samples, "max_new_tokens": max_new_tokens}
            workers[name] = ModelWorker(name, reasoner, queue_size=queue_size, info=model_info(name, reasoner, params))
    except BaseException:
        for w in workers.values():
            w.shutdown(grace_s=0)
        raise
    return workers


