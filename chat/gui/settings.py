"""The window's per-user settings: a small JSON file in the usual config folder.

Linux ``$XDG_CONFIG_HOME/classchat`` (``~/.config/classchat``), macOS
``~/Library/Application Support/classchat``, Windows ``%APPDATA%\\classchat``.
A missing or damaged file gives the defaults; saving writes a new file and
renames it over the old one, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..protocol import DEFAULT_HOST, DEFAULT_PORT

log = logging.getLogger("chat.gui.settings")

APP_FOLDER = "classchat"


def config_dir() -> Path:
    """Where this user's settings live on this platform."""
    if sys.platform == "win32":
        base = os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / APP_FOLDER


@dataclass
class Settings:
    """What the window remembers between runs."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    name: str = ""
    tls: bool = False
    font_size: int = 11
    #: TLS certificate fingerprints the user chose to trust, by "host:port".
    trusted: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        """The saved settings, or the defaults if there are none (or they are bad)."""
        path = path or config_dir() / "settings.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable settings in %s: %s", path, exc)
            return cls()
        settings = cls()
        if not isinstance(data, dict):
            return settings
        for f in fields(cls):
            value = data.get(f.name)
            default = getattr(settings, f.name)
            if type(value) is type(default):  # exactly: true is no port number
                setattr(settings, f.name, value)
        # Inside the dict too: a fingerprint that is not text would fail later,
        # in the middle of a TLS handshake.
        settings.trusted = {
            where: fingerprint
            for where, fingerprint in settings.trusted.items()
            if isinstance(fingerprint, str)
        }
        return settings

    def save(self, path: Path | None = None) -> None:
        """Write the settings; a failure is logged, never raised."""
        path = path or config_dir() / "settings.json"
        tmp_name = None
        try:
            # Even asking can fail (a folder on the way the user may not look
            # into): the window calls this as it closes, and must still close.
            if path.exists() and not path.is_file():
                # Renaming over /dev/null or a folder would replace it with a file.
                log.warning("not saving settings: %s is not a regular file", path)
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp"
            ) as tmp:
                tmp_name = tmp.name
                json.dump(asdict(self), tmp, indent=2)
            os.replace(tmp_name, path)
        except OSError as exc:
            log.warning("could not save settings to %s: %s", path, exc)
            if tmp_name is not None:  # a full disk: leave no half file behind
                try:
                    os.unlink(tmp_name)
                except OSError:
                    pass
