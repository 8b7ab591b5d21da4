"""The transparent vhost-user proxy: forwards every byte and SCM_RIGHTS fd, unchanged.

``server.ProxyServer`` is the entry point for in-process use (tests, extcap);
``relay`` holds the forwarding loop (one polling thread per socket pair),
``inbound`` a reading side's general path, ``framing`` the message framing, ``fds`` the fd descriptions, ``interpose``
the listen-path handling, ``queue`` the hand-off to an in-process sink and
``recorder`` the capture encoded on the forwarding threads.  The ``vuinspect
proxy`` command, the process that runs all this and the viewer it starts (which
decodes and shows in a separate process so that decoding never holds the GIL a
forwarding thread is waiting for) live in :mod:`vuinspect.commands`.
"""
