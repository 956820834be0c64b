"""`star serve`: load one or more bundles and serve them over HTTP (engine.serve)."""

from __future__ import annotations

import logging
import sys

from ..honesty import MaskGuard
from ..serve.setup import check_bind, load_workers, read_api_key


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
