"""`star serve`: load one or more bundles and serve them over HTTP (engine.serve)."""

from __future__ import annotations

import ipaddress
import logging
import re
import sys
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
    from ..pipeline import load_reasoner
    from ..serve.app import model_info
    from ..serve.requests import PredictParams
    from ..serve.worker import ModelWorker

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


def main(args) -> int:
    import uvicorn

    from ..serve.app import ServeSettings, create_app
    from ..serve.server import GracefulServer, http_url

    api_key = read_api_key(args.api_key_file)
    check_bind(args.host, api_key)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    workers = load_workers(args.bundle, device=args.device, threads=args.threads, max_samples=args.max_samples,
                           max_new_tokens=args.max_new_tokens, queue_size=args.queue, verify=args.verify,
                           mask_guard=MaskGuard.of_args(args))
    settings = ServeSettings(api_key=api_key, max_body_bytes=int(args.max_body_mb * 2**20), timeout_s=args.timeout)
    app = create_app(workers, settings)
    server = GracefulServer(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=args.timeout),
                            workers)
    print(f"star serve: {', '.join(workers)} on {http_url(args.host, args.port)} "
          f"({'API key required' if api_key else 'no API key'}); Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        server.run()
    finally:
        for w in workers.values():
            w.shutdown(grace_s=args.timeout)
    return 0
