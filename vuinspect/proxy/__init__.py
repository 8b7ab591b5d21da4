"""The transparent vhost-user proxy: forwards every byte and SCM_RIGHTS fd, unchanged.

``server.ProxyServer`` is the entry point; ``relay`` holds the forwarding loop,
``framing`` the message framing, ``fds`` the fd descriptions, ``interpose`` the
listen-path handling, ``queue`` the hand-off to a slow consumer and ``command``
the ``vuinspect proxy`` sub-command.
"""
