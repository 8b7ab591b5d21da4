"""Run the TUI app so an error in it ends as one line and exit status 1, never a traceback.

The app records the first error its handlers raise (``VuInspectApp.crash``) and
exits; an error that escapes ``App.run`` is recorded the same way.  Every face
that starts the TUI (``view``, the proxy's viewer, ``demo``) asks this once.
Whether there is a terminal to start it on is :func:`on_terminal`, also once.
"""

from __future__ import annotations

import sys
from typing import Any

from vuinspect.errors import CliError
from vuinspect.render import safe_text


def on_terminal() -> bool:
    """Stdin and stdout are both terminals: the TUI can start (it reads keys, paints).

    Without one the proxy prints lines instead and ``view`` refuses; started anyway,
    the TUI would write escape codes into a file and wait for keys that never come.
    """
    return sys.stdin.isatty() and sys.stdout.isatty()


def run_app(app: Any, **kwargs: Any) -> str | None:
    """Run ``app`` to its end; the one line saying why it stopped on an error, or None."""
    try:
        app.run(**kwargs)
    except Exception as exc:  # noqa: BLE001 - one line and a non-zero exit, never a traceback
        app.crash = app.crash or f"{type(exc).__name__}: {safe_text(exc)}"
    return app.crash


def crash_error(crash: str) -> CliError:
    """The error the command ends with (printed as one line, exit status 1)."""
    return CliError(f"the TUI stopped on an error: {crash} (VUINSPECT_TRACEBACK=1 shows where)")
