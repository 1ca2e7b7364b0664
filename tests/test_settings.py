"""The window's settings file (``chat.gui.settings``) when the disk says no.

No Tk here: ``Settings`` is plain data and a file.  The window saves as it
closes, so ``save`` must never raise: a raise there left the window open
for good (its close had begun, so a second click did nothing).
"""

from __future__ import annotations

import logging
import os

from chat.gui import settings as settings_module
from chat.gui.settings import Settings


def test_saving_where_the_folder_cannot_be_looked_into_is_logged_not_raised(
    tmp_path, caplog
):
    """Asking whether the file exists can fail before anything is written: a
    folder on the way the user may not look into (EACCES, after a ``sudo``
    made ``~/.config``), or here, as root ignores permissions, a folder name
    longer than the system allows (ENAMETOOLONG)."""
    path = tmp_path / ("x" * 300) / "settings.json"
    with caplog.at_level(logging.WARNING, logger="chat.gui.settings"):
        Settings(font_size=14).save(path)
    assert "could not save settings" in caplog.text
    assert Settings.load(path) == Settings()


def test_a_save_that_fails_leaves_no_temporary_file(tmp_path, monkeypatch, caplog):
    """Windows refuses the rename while another program holds the file open;
    a full disk fails the write.  Each try used to leave a ``.tmp`` file."""
    path = tmp_path / "settings.json"
    Settings(font_size=12).save(path)

    def refuse(source, target):
        raise PermissionError(13, "Access is denied", str(target))

    monkeypatch.setattr(settings_module.os, "replace", refuse)
    with caplog.at_level(logging.WARNING, logger="chat.gui.settings"):
        Settings(font_size=14).save(path)
    monkeypatch.undo()
    assert "could not save settings" in caplog.text
    assert os.listdir(tmp_path) == ["settings.json"]
    assert Settings.load(path).font_size == 12  # the old file, whole
