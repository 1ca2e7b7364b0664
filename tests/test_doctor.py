"""The connection doctor: plain words for each way a connection can fail."""

from __future__ import annotations

import socket

import pytest

from chat import doctor
from chat.doctor import ADVICE, advise, loopback_only


@pytest.mark.parametrize(
    ("failure", "says"),
    [
        ("refused", "Nothing is listening there"),
        ("timeout", "firewall"),
        ("unknown_host", "No computer has that name"),
        ("unreachable", "cannot be reached"),
        ("bad_password", "password is wrong"),
        ("tls_mismatch", "does not speak TLS"),
        ("tls_required", "speaks TLS only"),
        ("tls_untrusted", "not signed"),
        ("tls_changed", "not the one expected"),
        ("no_answer", "stopped answering"),
        ("no_welcome", "--echo only echoes"),
    ],
)
def test_each_failure_has_words_and_something_to_try(failure, says):
    lines = advise(failure, "127.0.0.1", 1)
    assert says in " ".join(lines)
    assert len(lines) >= 1 and all(line.endswith((".", ")", "?")) for line in lines)


def test_unknown_failures_get_no_advice():
    assert advise(None, "127.0.0.1", 1) == []
    assert advise("something new", "127.0.0.1", 1) == []


@pytest.fixture
def pretend_this_computer(monkeypatch):
    """Make one made-up address count as this computer's own network address
    (the tests never send to a real LAN address)."""
    monkeypatch.setattr(doctor, "_is_this_computer", lambda host: host == "10.9.9.9")


def test_a_server_on_loopback_only_is_recognised(pretend_this_computer):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert loopback_only("10.9.9.9", port)
        lines = advise("refused", "10.9.9.9", port)
    assert lines == ADVICE["loopback_only"]
    assert "--host 0.0.0.0" in lines[1]


def test_no_server_at_all_is_just_refused(pretend_this_computer):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there
    assert not loopback_only("10.9.9.9", port)
    assert advise("refused", "10.9.9.9", port) == ADVICE["refused"]


def test_another_computer_is_never_probed(monkeypatch):
    monkeypatch.setattr(doctor, "_is_this_computer", lambda host: False)
    tried = []
    monkeypatch.setattr(
        socket, "create_connection", lambda *a, **k: tried.append(a) or None
    )
    assert not loopback_only("10.1.2.3", 12345)
    assert tried == []


def test_loopback_itself_refused_is_not_a_loopback_only_server():
    assert not doctor._is_this_computer("127.0.0.1")
    assert not doctor._is_this_computer("::1")


def test_the_computers_own_name_on_127_0_1_1_is_loopback_only():
    """Debian and Ubuntu give the computer's own name the address 127.0.1.1:
    a server on 127.0.0.1 does not answer there, and --host 0.0.0.0 helps."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert advise("refused", "127.0.1.1", port) == ADVICE["loopback_only"]
