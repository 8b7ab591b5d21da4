"""Install the vhost-user dissector (and optionally the extcap launcher) for the current user.

The Lua file is generated from the protocol tables of this vuinspect, so an
installed wheel needs no data files.  Folders come from ``tshark -G folders``
("Personal Lua Plugins", "Personal Extcap path"); Wireshark 4.0 does not print
a personal extcap path but scans ``<Personal configuration>/extcap``.  Without
tshark the documented Linux defaults are used and a hint says what to install.
After installing, captures open decoded with no ``-X lua_script:`` option.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .luagen import FILE_NAME, generate

EXTCAP_NAME = "vuinspect-extcap"
NO_WIRESHARK = (
    "tshark was not found, so Wireshark seems not to be installed: install it "
    "(Debian/Ubuntu: apt install tshark wireshark) and rerun; using the default "
    "folders meanwhile"
)


@dataclass
class Folders:
    lua_plugins: Path
    extcap: Path
    from_tshark: bool


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def _config_home() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return Path(xdg) if xdg else _home() / ".config"


def parse_folders(text: str) -> dict[str, str]:
    """``tshark -G folders`` lines ``Name:<tab>path`` -> {name: path} (first one wins)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, path = line.partition(":")
        if sep and path.strip():
            out.setdefault(name.strip(), path.strip())
    return out


def find_folders(tshark: str | None = None) -> Folders:
    """Where Wireshark looks for personal Lua plugins and extcap programs."""
    tshark = tshark or shutil.which("tshark")
    found: dict[str, str] = {}
    if tshark:
        try:
            proc = subprocess.run(
                [tshark, "-G", "folders"], capture_output=True, text=True, timeout=30, check=False
            )
            found = parse_folders(proc.stdout)
        except (OSError, subprocess.TimeoutExpired):
            found = {}
    lua = found.get("Personal Lua Plugins") or str(_home() / ".local/lib/wireshark/plugins")
    config = found.get("Personal configuration") or str(_config_home() / "wireshark")
    extcap = found.get("Personal Extcap path") or str(Path(config) / "extcap")
    return Folders(Path(lua), Path(extcap), bool(found))


def launcher_text(python: str | None = None) -> str:
    """The extcap entry: Wireshark runs it directly, so its shebang names our interpreter."""
    return (
        f"#!{python or sys.executable}\n"
        "# vuinspect extcap launcher, installed by `vuinspect install-dissector --extcap`.\n"
        "import sys\n\n"
        "from vuinspect.wireshark.extcap import main\n\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    tmp.replace(path)


DESCRIPTION = """\
Install the vhost-user dissector into your Wireshark (for the current user), so
Wireshark and tshark open vuinspect captures decoded; with --extcap, also the
'vhost-user proxy' capture interface, to capture live from Wireshark.

The folders are the ones 'tshark -G folders' names (Personal Lua Plugins,
Personal Extcap path); without tshark the usual Linux folders are used.

examples:
  vuinspect install-dissector             # then: wireshark trace.pcapng
  vuinspect install-dissector --extcap
  vuinspect install-dissector --print-path
  vuinspect install-dissector --uninstall
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION  # (the module docstring is for developers)
    parser.add_argument("--uninstall", action="store_true", help="remove what was installed")
    parser.add_argument(
        "--print-path",
        action="store_true",
        help="print where the dissector goes (and the extcap with --extcap)",
    )
    parser.add_argument(
        "--extcap",
        action="store_true",
        help="also install the 'vhost-user proxy' capture interface (extcap)",
    )
    parser.add_argument("--dir", metavar="DIR", help="Lua plugin folder to use instead")


def run(args: argparse.Namespace) -> int:
    from vuinspect.errors import CliError

    folders = find_folders()
    lua_dir = Path(args.dir) if args.dir else folders.lua_plugins
    lua_path = lua_dir / FILE_NAME
    extcap_path = folders.extcap / EXTCAP_NAME
    if not folders.from_tshark and not args.dir:
        print(f"vuinspect install-dissector: {NO_WIRESHARK}", file=sys.stderr)
    if args.print_path:
        print(lua_path)
        if args.extcap:
            print(extcap_path)
        return 0
    if args.uninstall:
        removed = []
        for p in (lua_path, extcap_path):
            if p.is_file():
                p.unlink()
                removed.append(p)
                print(f"removed {p}")
        if not removed:
            print(f"nothing to remove ({lua_path} is not installed)")
        return 0
    try:
        _write(lua_path, generate(), 0o644)
        print(f"installed the vhost-user dissector: {lua_path}")
        if args.extcap:
            _write(extcap_path, launcher_text(), 0o755)
            mode = extcap_path.stat().st_mode
            assert mode & stat.S_IXUSR
            print(f"installed the extcap interface 'vhost-user proxy (vuinspect)': {extcap_path}")
    except OSError as exc:
        raise CliError(f"cannot install: {exc}") from None
    print("Restart Wireshark (or Analyze > Reload Lua Plugins, Ctrl+Shift+L) to load it.")
    return 0
