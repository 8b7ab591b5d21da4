"""Reproduce, don't just observe: compare captures (``diff``) and replay one against a live peer (``replay``)."""
