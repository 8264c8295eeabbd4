"""ASGI internals of the HTTP server: the edge (limits, timeouts, origin checks), disconnects,
shutdown, the runner and the OpenAPI document. Plugins never import these."""
