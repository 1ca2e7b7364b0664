"""Make the README's screenshots: a real server, real clients, a real window.

Run it on an X display, for example a virtual one:

    xvfb-run -s "-screen 0 1100x700x24" python3 docs/screenshots.py

It starts a server on a free port of 127.0.0.1, lets a few scripted students
talk through it, shows the conversation in a ``ChatApp`` and saves
``docs/gui.png`` with ImageMagick's ``import``.  (Emoji need a font that has
them; on Debian, ``fonts-symbola``.)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import tkinter as tk
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat.gui.app import ChatApp  # noqa: E402
from chat.gui.settings import Settings  # noqa: E402
from tests.helpers import json_client, running_server, wait_for  # noqa: E402

SCRIPT = [
    ("maya", "say", "hi everyone 👋"),
    ("leo", "say", "is it port 12345 today?"),
    ("ada", "say", "yes! nc 127.0.0.1 12345 works too"),
    ("sam", "me", "is reading docs/protocol.md 📖"),
    ("leo", "say", "@ada it works!! my recv(1024) version split a line in two 😅"),
    ("maya", "private", "ada can you look at my framing code after class?"),
    ("ada", "say", "TCP is a stream: keep a buffer and split on \\n"),
    ("sam", "say", "so that's why the emoji broke: half of it was in the next recv 🤯"),
    ("maya", "say", "works now 🎉 thanks ada"),
]


def pump(root: tk.Tk, condition, what: str) -> None:
    def step():
        root.update()
        return condition()

    wait_for(step, 10, what)


def main() -> None:
    out = ROOT / "docs" / "gui.png"
    with running_server() as server, tempfile.TemporaryDirectory() as scratch:
        root = tk.Tk(className="ClassChat")
        root.geometry("900x520+0+0")
        app = ChatApp(
            root, Settings(font_size=12), settings_path=Path(scratch) / "settings.json"
        )
        app.connect("127.0.0.1", server.port, "ada")
        pump(root, lambda: app.client and app.client.connected, "the welcome")
        people = {name: json_client(server.port, name) for name in ("maya", "leo")}
        people["sam"] = json_client(server.port, "sam")
        server.room.announce("Welcome to today's lesson: sockets and framing!")
        for who, kind, text in SCRIPT:
            if who == "ada":
                app.submit(text)
            elif kind == "me":
                people[who].send_json(type="say", text=text, me=True)
            elif kind == "private":
                to, _, words = text.partition(" ")
                people[who].send_json(type="private", to=to, text=words)
            else:
                people[who].send_json(type="say", text=text)
            last = text.split()[-1]
            pump(root, lambda last=last: last in app.view.contents(), repr(text))
        people.pop("sam").close()
        pump(root, lambda: "sam left" in app.view.contents(), "sam leaving")
        app.entry.insert(0, "remember: never trust recv() boundaries")
        root.focus_force()
        app.entry.focus_force()
        root.update()
        time.sleep(0.3)  # let the X server draw everything before the capture
        root.update()
        # The whole screen, cropped to the window: the menu bar is a window
        # of its own when no window manager frames them together.
        geometry = f"{root.winfo_width()}x{root.winfo_height() + 28}+0+0"
        subprocess.run(
            ["import", "-window", "root", "-crop", geometry, str(out)],
            check=True,
            timeout=10,
        )
        for client in people.values():
            client.close()
        app.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
