"""In-repo vhost-user test peers: a minimal front-end and back-end.

They speak just enough of the protocol (correct framing, SCM_RIGHTS fds, reply
flags exactly 0x5, the back-end channel) to drive the proxy from tests and
benchmarks without QEMU, and they record what they sent and received so a
direct run and a proxied run can be compared byte for byte and fd for fd.
``procs`` runs the proxy and the peers as processes for tests (one command line,
one wait for the readiness line, one stop).
"""
