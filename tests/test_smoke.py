"""A first end-to-end check: two kinds of client in one room."""

from tests.helpers import json_client, plain_client


def test_plain_and_json_clients_share_one_room(server):
    with (
        plain_client(server.port, "alice") as alice,
        json_client(server.port, "bob") as bob,
    ):
        assert bob.welcome["users"] == ["alice", "bob"]
        alice.expect_text("* bob joined")
        alice.send_line("hello bob")
        message = bob.expect_json("message")
        assert (message["from"], message["text"]) == ("alice", "hello bob")
        bob.send_json(type="say", text="hi alice")
        assert alice.expect_text("bob:") == "bob: hi alice"
        # JSON clients get their own messages back, in the room's order.
        assert bob.expect_json("message")["text"] == "hi alice"
