"""Commands that run the pieces together (the ``vuinspect proxy`` process and its viewer).

``proxy.py`` is the command line, ``proxy_engine.py`` the forwarding process (server,
recorder, ring sampler), ``proxy_viewer.py`` the viewer child it starts (TUI or summary
lines).  ``vuinspect.proxy`` itself holds only the socket side.
"""
