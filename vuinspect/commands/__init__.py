"""Commands that run the pieces together (the ``vuinspect proxy`` process and its viewer).

``proxy.py`` is the command line; ``proxy_engine.py`` runs the forwarding process
(:class:`vuinspect.proxy.engine.Engine`: server, recorder, ring sampler, signals, the
same one the Wireshark extcap runs) with the viewer child and the TUI's intercept
control; ``proxy_viewer.py`` is that viewer child (TUI or summary lines).
"""
