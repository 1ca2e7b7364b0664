"""``python -m chat.bench COMMAND ...``: see ``chat.bench`` for the commands."""

from __future__ import annotations

import sys

COMMANDS = {
    "run": "chat.bench.load",
    "ceiling": "chat.bench.ceiling",
    "compare": "chat.bench.compare",
    "gui": "chat.bench.gui",
    "floor": "chat.bench.floor",
    "relay": "chat.bench.relay",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m chat.bench {{{','.join(COMMANDS)}}} [--help]")
        print(__import__("chat.bench").bench.__doc__)
        return 2
    module = __import__(COMMANDS[argv[0]], fromlist=["main"])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
