"""The Textual TUI: ``VuInspectApp(source)`` over a capture file or a live proxy feed.

Live use from the proxy::

    from vuinspect.tui.app import VuInspectApp
    from vuinspect.tui.sources import LiveSource

    live = LiveSource("proxy")
    server = ProxyServer(routes, live.push)   # or a sink that also writes the capture
    server.start()
    try:
        VuInspectApp(live, device=device).run()
    finally:
        server.stop()
        live.end()
"""
