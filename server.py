#!/usr/bin/env python3
"""Start the chat server.

    python server.py                  # 127.0.0.1:12345, this computer only
    python server.py --host 0.0.0.0   # the whole class can connect
    python server.py --help           # every option

Everything it runs lives in ``chat.console``.
"""

import sys

from chat.console import main

if __name__ == "__main__":
    sys.exit(main())
