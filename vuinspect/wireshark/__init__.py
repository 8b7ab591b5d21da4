"""Wireshark side of vuinspect: the generated Lua dissector, its installer, the extcap entry.

``fields`` turns the protocol tables into Wireshark field definitions, ``luagen``
writes ``dissectors/vhost_user.lua`` from them (the runtime Lua it appends
lives in ``lua_decode`` and ``lua_session``), ``install`` copies the dissector
and the extcap launcher into the user's Wireshark folders, and ``extcap``
speaks Wireshark's extcap protocol around the proxy.
"""
