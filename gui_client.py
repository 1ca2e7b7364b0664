#!/usr/bin/env python3
"""Start the chat window.  Double-click this file, or:

    python gui_client.py                                  # asks where to connect
    python gui_client.py --host 127.0.0.1 --port 12345 --name ada
    python gui_client.py --log chat.txt                   # keep a transcript

Everything it runs lives in ``chat.gui.app``.
"""

import sys

#: Said instead of a traceback when this Python came without Tk (Debian and
#: Ubuntu ship it apart; pyenv builds it only if Tk's headers were there).
NO_TK = """\
The chat window needs Tk, and this Python was installed without it.
  Debian, Ubuntu: sudo apt install python3-tk
  Fedora: sudo dnf install python3-tkinter
  macOS with Homebrew: brew install python-tk
The console client needs nothing more: python -m chat"""

if __name__ == "__main__":
    try:
        from chat.gui.app import main
    except ModuleNotFoundError as exc:
        if exc.name not in ("tkinter", "_tkinter"):
            raise
        sys.exit(NO_TK)
    sys.exit(main())
