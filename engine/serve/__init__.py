"""`star serve`: the engine as a local HTTP server in X-AnyLabeling-Server's protocol (docs/serve.md)."""
