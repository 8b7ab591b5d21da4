"""Addon tests reuse the proxy tests' fixtures (sockets in short temp dirs, an in-process proxy)."""

from tests.proxy.conftest import backend_server, procs, proxy, sockdir  # noqa: F401
