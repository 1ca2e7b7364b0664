#!/usr/bin/env python3
"""Start the chat window.  Double-click this file, or:

    python gui_client.py                                  # asks where to connect
    python gui_client.py --host 127.0.0.1 --port 12345 --name ada
    python gui_client.py --log chat.txt                   # keep a transcript

Everything it runs lives in ``chat.gui.app``.
"""

import sys

from chat.gui.app import main

if __name__ == "__main__":
    sys.exit(main())
