"""vuinspect: a transparent proxy, decoder, TUI and Wireshark dissector for vhost-user."""

__version__ = "0.1.0"
