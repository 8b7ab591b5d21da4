"""Rules tests reuse the proxy tests' fixtures (sockets in short temp dirs, an in-process proxy)
and the real-world tests' guest and work directory."""

from tests.proxy.conftest import proxy, sockdir  # noqa: F401
from tests.realworld.conftest import guest, programs, workdir  # noqa: F401
