"""The transparent vhost-user proxy: forwards every byte and SCM_RIGHTS fd, unchanged.

``server.ProxyServer`` is the entry point for in-process use (tests); ``engine``
the forwarding process of ``vuinspect proxy`` and the Wireshark extcap (server,
recorder, ring sampler, rules, signals, stop).  ``relay`` holds the forwarding
loop (one polling thread per socket pair) with, beside it, ``inbound`` (a reading
side's general path), ``backlog`` (what waits to be sent), ``watch`` (what poll
waits for) and ``ending`` (why a link ended); ``framing`` the message framing,
``fds`` the fd descriptions, ``interpose`` the listen-path handling, ``failures``
the coalesced connect failures, ``sink`` and ``queue`` the hand-off of frames and
``recorder`` the capture encoded on the forwarding threads.  The ``vuinspect
proxy`` command and the viewer it starts (which decodes and shows in a separate
process so that decoding never holds the GIL a forwarding thread is waiting for)
live in :mod:`vuinspect.commands`.
"""
