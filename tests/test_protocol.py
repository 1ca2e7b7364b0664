"""Tests for ``chat.protocol``: framing, encoding, decoding, names and escaping.

As in h11's ``tests/test_io.py``, every framing case is a row in a table and is
fed whole, one byte at a time and in random chunkings: the same lines must come
out whichever way the bytes arrive.  Hypothesis then tries streams and messages
nobody thought of.
"""

from __future__ import annotations

import itertools
import json
import random
import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chat.protocol import (
    CLIENT_TYPES,
    ERROR_CODES,
    MAX_LINE_BYTES,
    MAX_NAME_CHARS,
    SERVER_TYPES,
    Bye,
    Error,
    Hello,
    Joined,
    Left,
    LineDecoder,
    LineTooLong,
    Message,
    Notice,
    Ping,
    Pong,
    Private,
    PrivateMessage,
    ProtocolError,
    Rename,
    Renamed,
    Say,
    Users,
    Welcome,
    Who,
    check_name,
    decode_client,
    decode_server,
    encode,
    escape_text,
    looks_like_json,
    name_key,
    parse_json_line,
    to_dict,
)

EMOJI = "🙂"  # four bytes in UTF-8: f0 9f 99 82
assert len(EMOJI.encode()) == 4

# ---------------------------------------------------------------------------
# Feeding helpers: one stream, three ways of cutting it.

Output = list["bytes | LineTooLong"]


def feed_whole(decoder: LineDecoder, data: bytes) -> Output:
    return decoder.feed(data)


def feed_bytewise(decoder: LineDecoder, data: bytes) -> Output:
    out: Output = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
    return out


def feed_at(decoder: LineDecoder, data: bytes, cuts: list[int]) -> Output:
    """Feed ``data`` cut at the given offsets (any order, any repeats)."""
    edges = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    out: Output = []
    for start, end in itertools.pairwise(edges):
        out += decoder.feed(data[start:end])
    return out


def random_cutter(seed: int) -> Callable[[LineDecoder, bytes], Output]:
    def feed_random(decoder: LineDecoder, data: bytes) -> Output:
        rng = random.Random(seed)
        cuts = [rng.randrange(len(data) + 1) for _ in range(rng.randrange(8))]
        return feed_at(decoder, data, cuts)

    return feed_random


FEEDERS = {
    "whole": feed_whole,
    "byte-at-a-time": feed_bytewise,
    **{f"random-{seed}": random_cutter(seed) for seed in range(5)},
}
feeders = pytest.mark.parametrize("feed", FEEDERS.values(), ids=FEEDERS.keys())

# ---------------------------------------------------------------------------
# Framing

LIMIT = 16  # a small max_line_bytes keeps the cases readable
TOO_LONG = LineTooLong(LIMIT)

FRAMING_CASES = [
    # (id, bytes in, lines out)
    ("one line", b"hello\n", [b"hello"]),
    ("two lines, one chunk", b"hello\nworld\n", [b"hello", b"world"]),
    ("unfinished line waits", b"hello\nwor", [b"hello"]),
    ("nothing yet", b"hel", []),
    ("empty lines", b"\n\n\n", [b"", b"", b""]),
    ("CRLF keeps its CR", b"hi\r\nyo\r\n", [b"hi\r", b"yo\r"]),
    ("emoji", EMOJI.encode() + b"\n", [EMOJI.encode()]),
    ("exactly at the limit", b"x" * LIMIT + b"\n", [b"x" * LIMIT]),
    (
        "one byte over, then the next line",
        b"x" * (LIMIT + 1) + b"\nnext\n",
        [TOO_LONG, b"next"],
    ),
    ("far over, unterminated", b"x" * (LIMIT * 3), [TOO_LONG]),
    (
        "two long lines, two markers",
        b"a" * (LIMIT + 5) + b"\n" + b"b" * (LIMIT + 5) + b"\nok\n",
        [TOO_LONG, TOO_LONG, b"ok"],
    ),
    (
        "limit counts bytes, not characters",
        EMOJI.encode() * (LIMIT // 4) + b"\n" + EMOJI.encode() * (LIMIT // 4) + b"!\n",
        [EMOJI.encode() * (LIMIT // 4), TOO_LONG],
    ),
    (
        "long line then short ones",
        b"y" * 40 + b"\na\n\nb\n",
        [TOO_LONG, b"a", b"", b"b"],
    ),
]


@feeders
@pytest.mark.parametrize(
    "data, expected",
    [case[1:] for case in FRAMING_CASES],
    ids=[case[0] for case in FRAMING_CASES],
)
def test_framing(feed, data, expected):
    decoder = LineDecoder(max_line_bytes=LIMIT, max_unterminated_bytes=1000)
    assert feed(decoder, data) == expected
    assert decoder.buffered <= LIMIT


@feeders
def test_emoji_split_across_feeds_comes_out_whole(feed):
    line = json.dumps({"type": "say", "text": f"hi {EMOJI}"}, ensure_ascii=False)
    data = line.encode() + b"\n"
    [decoded] = feed(LineDecoder(), data)
    assert decode_client(decoded) == Say(f"hi {EMOJI}")


def test_emoji_bytes_fed_one_at_a_time_are_held_until_the_newline():
    decoder = LineDecoder()
    for i, byte in enumerate(EMOJI.encode()):
        assert decoder.feed(bytes([byte])) == []
        assert decoder.buffered == i + 1
    assert decoder.feed(b"\n") == [EMOJI.encode()]
    assert decoder.buffered == 0


@feeders
def test_real_limit_exactly_and_one_over(feed):
    exact = b"x" * MAX_LINE_BYTES
    data = exact + b"\n" + exact + b"y\n" + b"after\n"
    assert feed(LineDecoder(), data) == [
        exact,
        LineTooLong(MAX_LINE_BYTES),
        b"after",
    ]


def test_long_line_byte_at_a_time_gives_one_marker_as_soon_as_it_passes():
    decoder = LineDecoder(max_line_bytes=LIMIT, max_unterminated_bytes=1000)
    for _ in range(LIMIT):
        assert decoder.feed(b"x") == []
    assert decoder.buffered == LIMIT
    # The byte that passes the limit is the one that reports it ...
    assert decoder.feed(b"x") == [TOO_LONG]
    assert decoder.buffered == 0
    # ... and the rest of the line is dropped, not stored, with no more markers.
    for _ in range(500):
        assert decoder.feed(b"x") == []
        assert decoder.buffered == 0
    assert decoder.feed(b"\n") == []
    assert feed_bytewise(decoder, b"next\n") == [b"next"]


def test_buffer_never_holds_more_than_one_line_limit():
    rng = random.Random(7)
    decoder = LineDecoder(max_line_bytes=100, max_unterminated_bytes=10**9)
    for _ in range(300):  # lines of every length, in chunks of every size
        size = rng.randrange(1, 400)
        decoder.feed(bytes(rng.choices(b"ab\n", weights=[50, 50, 1], k=size)))
        assert decoder.buffered <= 100


HARD = 64  # max_unterminated_bytes for the cases below


@feeders
def test_unterminated_line_at_the_hard_limit_is_still_survivable(feed):
    decoder = LineDecoder(max_line_bytes=LIMIT, max_unterminated_bytes=HARD)
    assert feed(decoder, b"x" * HARD + b"\nok\n") == [TOO_LONG, b"ok"]


@feeders
@pytest.mark.parametrize("terminated", [False, True], ids=["open", "then-newline"])
def test_line_past_the_hard_limit_raises_too_long(feed, terminated):
    """One byte past ``max_unterminated_bytes`` without a newline is fatal.

    Even when the newline follows in the same chunk: had the bytes come one at
    a time, the decoder could not have waited for it.
    """
    decoder = LineDecoder(max_line_bytes=LIMIT, max_unterminated_bytes=HARD)
    data = b"x" * (HARD + 1) + (b"\n" if terminated else b"")
    with pytest.raises(ProtocolError) as caught:
        feed(decoder, data)
    assert caught.value.code == "too_long"
    assert decoder.buffered <= LIMIT


def test_hard_limit_raises_on_the_first_byte_past_it():
    decoder = LineDecoder(max_line_bytes=LIMIT, max_unterminated_bytes=HARD)
    assert feed_bytewise(decoder, b"x" * HARD) == [TOO_LONG]
    with pytest.raises(ProtocolError, match=str(HARD)):
        decoder.feed(b"x")


def test_a_huge_stream_without_newlines_stays_small_until_it_is_refused():
    decoder = LineDecoder()  # the real limits: 8 KiB per line, 1 MiB unterminated
    chunk = b"z" * 8192
    fed = 0
    with pytest.raises(ProtocolError) as caught:
        for _ in range(2 * decoder.max_unterminated_bytes // len(chunk)):
            fed += len(chunk)
            decoder.feed(chunk)
            assert decoder.buffered <= decoder.max_line_bytes
    assert caught.value.code == "too_long"
    # Refused by the very chunk that carried the line past the hard limit.
    assert fed - len(chunk) <= decoder.max_unterminated_bytes < fed


@pytest.mark.parametrize("max_line, max_unterminated", [(0, 10), (-1, 10), (10, 9)])
def test_decoder_refuses_nonsense_limits(max_line, max_unterminated):
    with pytest.raises(ValueError):
        LineDecoder(max_line, max_unterminated)


def model_lines(data: bytes, limit: int, hard: int) -> tuple[Output, bool]:
    """What the decoder should return for ``data``: (lines, whether it raises).

    A plain restatement of the contract, independent of the decoder's code.
    """
    *complete, tail = data.split(b"\n")
    out: Output = []
    for line in complete:
        if len(line) > hard:
            return out, True
        out.append(line if len(line) <= limit else LineTooLong(limit))
    if len(tail) > hard:
        return out, True
    if len(tail) > limit:
        out.append(LineTooLong(limit))
    return out, False


# Bytes from a small alphabet make newlines and long lines common.
streams = st.binary(max_size=300) | st.lists(
    st.sampled_from([b"a", b"\n", b"\r", b"\xf0", b"\x9f", b"\xff", b"{"]),
    max_size=300,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(
    data=streams,
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=20),
    limit=st.integers(min_value=1, max_value=20),
    extra=st.integers(min_value=0, max_value=40),
)
def test_any_stream_any_chunking_gives_the_model_lines(data, cuts, limit, extra):
    hard = limit + extra
    expected, raises = model_lines(data, limit, hard)
    for chunking in ([], range(len(data)), cuts):  # whole, bytewise, drawn
        out: Output = []
        decoder = LineDecoder(limit, hard)
        edges = [0, *sorted({c for c in chunking if 0 < c < len(data)}), len(data)]
        try:
            for start, end in itertools.pairwise(edges):
                out += decoder.feed(data[start:end])
                assert decoder.buffered <= limit
        except ProtocolError as exc:  # the only exception a peer may cause
            assert raises, f"unexpected {exc.code}"
            assert exc.code == "too_long"
            # The lines returned before the error start the model's lines
            # (the offending line's marker may have come out first, or not).
            assert out == [*expected, LineTooLong(limit)][: len(out)]
        else:
            assert not raises
            assert out == expected


# ---------------------------------------------------------------------------
# Encoding


def wire(message) -> dict:
    """The JSON object ``encode`` put on the wire."""
    line = encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    return json.loads(line)


@pytest.mark.parametrize(
    "message, expected",
    [
        (Hello("alice"), {"type": "hello", "name": "alice"}),
        (
            Hello("alice", password="pw", since=7),
            {"type": "hello", "name": "alice", "password": "pw", "since": 7},
        ),
        (Say("hi"), {"type": "say", "text": "hi"}),
        (
            Say("waves", me=True, cid="c1"),
            {"type": "say", "text": "waves", "me": True, "cid": "c1"},
        ),
        (Say("hi", me=False), {"type": "say", "text": "hi", "me": False}),
        (Private("bob", "psst"), {"type": "private", "to": "bob", "text": "psst"}),
        (Who(), {"type": "who"}),
        (Bye(), {"type": "bye"}),
        (
            Message(3, "alice", "hi", 1.5),
            {"type": "message", "id": 3, "from": "alice", "text": "hi", "ts": 1.5},
        ),
        (
            PrivateMessage("alice", "bob", "psst", 2.0, cid="x"),
            {
                "type": "private",
                "from": "alice",
                "to": "bob",
                "text": "psst",
                "ts": 2.0,
                "cid": "x",
            },
        ),
        (
            Welcome("bob", ("bob",), (), "r1", last_id=7, max_line=100),
            {
                "type": "welcome",
                "name": "bob",
                "users": ["bob"],
                "history": [],
                "room": "r1",
                "last_id": 7,
                "max_line": 100,
            },
        ),
        (
            Welcome("bob", ("alice", "bob"), (Message(1, "alice", "hi", 1.0),)),
            {
                "type": "welcome",
                "name": "bob",
                "users": ["alice", "bob"],
                "history": [
                    {
                        "type": "message",
                        "id": 1,
                        "from": "alice",
                        "text": "hi",
                        "ts": 1.0,
                    }
                ],
            },
        ),
        (
            Error("empty", "no text", cid="c9"),
            {"type": "error", "code": "empty", "text": "no text", "cid": "c9"},
        ),
    ],
    ids=lambda value: getattr(value, "type", None),
)
def test_encode_writes_the_documented_json(message, expected):
    assert wire(message) == expected


def test_encode_keeps_text_readable_and_newlines_escaped():
    line = encode(Say(f"café\n{EMOJI}\u2028"))
    assert "café".encode() in line and EMOJI.encode() in line  # not \\u escapes
    assert line.count(b"\n") == 1  # the text's newline travels as \\n


# ---------------------------------------------------------------------------
# Decoding


def test_decode_maps_from_to_sender():
    line = b'{"type":"message","id":1,"from":"alice","text":"hi","ts":5}'
    assert decode_server(line) == Message(1, "alice", "hi", 5.0)


def test_decode_ignores_unknown_fields_and_treats_null_as_absent():
    line = b'{"type":"say","text":"hi","colour":"red","cid":null,"v":[1,{}]}'
    assert decode_client(line) == Say("hi")


def test_decode_accepts_an_escaped_surrogate_pair():
    assert decode_client(b'{"type":"say","text":"\\ud83d\\ude42"}') == Say(EMOJI)


def test_decode_accepts_crlf_and_spaces():
    assert decode_client(b' { "type" : "who" } \r') == Who()


CLIENT_ERRORS = [
    # (id, line, code)
    ("invalid byte", b"\xff\xfe", "bad_utf8"),
    ("truncated UTF-8", b'{"type":"say","text":"\xc3"}', "bad_utf8"),
    ("UTF-8 encoded surrogate", b'{"type":"say","text":"\xed\xa0\x80"}', "bad_utf8"),
    ("overlong UTF-8", b'{"type":"say","text":"\xc0\xaf"}', "bad_utf8"),
    ("words", b"hello there", "bad_json"),
    ("empty", b"", "bad_json"),
    ("half an object", b'{"type":"say"', "bad_json"),
    ("a BOM", b'\xef\xbb\xbf{"type":"who"}', "bad_json"),
    ("array", b'["say","hi"]', "bad_json"),
    ("string", b'"say"', "bad_json"),
    ("number", b"42", "bad_json"),
    ("null", b"null", "bad_json"),
    ("deep nesting", b"[" * 5000, "bad_json"),
    ("deep nesting inside", b'{"type":"who","x":' + b"[" * 5000, "bad_json"),
    ("no type", b'{"text":"hi"}', "bad_message"),
    ("number type", b'{"type":1}', "bad_message"),
    ("null type", b'{"type":null}', "bad_message"),
    ("list type", b'{"type":["say"]}', "bad_message"),
    ("unknown type", b'{"type":"dance"}', "unknown_type"),
    ("type in capitals", b'{"type":"SAY","text":"hi"}', "unknown_type"),
    (
        "a server type",
        b'{"type":"welcome","name":"a","users":[],"history":[]}',
        "unknown_type",
    ),
    ("say without text", b'{"type":"say"}', "bad_message"),
    ("say text null", b'{"type":"say","text":null}', "bad_message"),
    ("say text number", b'{"type":"say","text":5}', "bad_message"),
    ("say text bool", b'{"type":"say","text":true}', "bad_message"),
    ("say text NaN", b'{"type":"say","text":NaN}', "bad_message"),
    ("say text object", b'{"type":"say","text":{}}', "bad_message"),
    ("say me string", b'{"type":"say","text":"hi","me":"yes"}', "bad_message"),
    (
        "say me 1 (an int is not a bool)",
        b'{"type":"say","text":"hi","me":1}',
        "bad_message",
    ),
    ("say cid number", b'{"type":"say","text":"hi","cid":7}', "bad_message"),
    ("lone high surrogate", b'{"type":"say","text":"a\\ud800b"}', "bad_message"),
    ("lone low surrogate", b'{"type":"say","text":"\\udfff"}', "bad_message"),
    ("surrogate in a name", b'{"type":"hello","name":"\\ud800"}', "bad_message"),
    ("hello without name", b'{"type":"hello"}', "bad_message"),
    (
        "since true (a bool is not an int)",
        b'{"type":"hello","name":"a","since":true}',
        "bad_message",
    ),
    ("since float", b'{"type":"hello","name":"a","since":1.5}', "bad_message"),
    ("since string", b'{"type":"hello","name":"a","since":"3"}', "bad_message"),
    ("private without to", b'{"type":"private","text":"hi"}', "bad_message"),
    ("private to number", b'{"type":"private","to":1,"text":"hi"}', "bad_message"),
    ("rename name list", b'{"type":"rename","name":["a"]}', "bad_message"),
    ("bye reason bool", b'{"type":"bye","reason":false}', "bad_message"),
]


@pytest.mark.parametrize(
    "line, code",
    [case[1:] for case in CLIENT_ERRORS],
    ids=[case[0] for case in CLIENT_ERRORS],
)
def test_decode_client_refuses(line, code):
    with pytest.raises(ProtocolError) as caught:
        decode_client(line)
    assert caught.value.code == code
    assert code in ERROR_CODES
    assert caught.value.text


SERVER_ERRORS = [
    ("a client type", b'{"type":"hello","name":"a"}', "unknown_type"),
    (
        "message id bool",
        b'{"type":"message","id":true,"from":"a","text":"","ts":1}',
        "bad_message",
    ),
    (
        "message id float",
        b'{"type":"message","id":1.0,"from":"a","text":"","ts":1}',
        "bad_message",
    ),
    (
        "message ts string",
        b'{"type":"message","id":1,"from":"a","text":"","ts":"now"}',
        "bad_message",
    ),
    (
        "message ts bool",
        b'{"type":"message","id":1,"from":"a","text":"","ts":false}',
        "bad_message",
    ),
    (
        "sender, not from",
        b'{"type":"message","id":1,"sender":"a","text":"","ts":1}',
        "bad_message",
    ),
    ("users a string", b'{"type":"users","users":"alice"}', "bad_message"),
    ("users with a number", b'{"type":"users","users":["a",1]}', "bad_message"),
    ("users with a surrogate", b'{"type":"users","users":["\\udc00"]}', "bad_message"),
    (
        "history an object",
        b'{"type":"welcome","name":"a","users":[],"history":{}}',
        "bad_message",
    ),
    (
        "history of numbers",
        b'{"type":"welcome","name":"a","users":[],"history":[1]}',
        "bad_message",
    ),
    (
        "history holding a joined",
        b'{"type":"welcome","name":"a","users":[],"history":[{"type":"joined","name":"x"}]}',
        "bad_message",
    ),
    (
        "history message missing ts",
        b'{"type":"welcome","name":"a","users":[],"history":[{"type":"message","id":1,"from":"b","text":"x"}]}',
        "bad_message",
    ),
    ("left without reason", b'{"type":"left","name":"a"}', "bad_message"),
    ("error without code", b'{"type":"error","text":"x"}', "bad_message"),
]


@pytest.mark.parametrize(
    "line, code",
    [case[1:] for case in SERVER_ERRORS],
    ids=[case[0] for case in SERVER_ERRORS],
)
def test_decode_server_refuses(line, code):
    with pytest.raises(ProtocolError) as caught:
        decode_server(line)
    assert caught.value.code == code


@pytest.mark.parametrize(
    "line, expected",
    [
        (b'{"type":"say"}', True),
        (b'  {"type":"say"}', True),
        (b"{", True),
        (b"alice", False),
        (b"", False),
        (b"[1]", False),
        (b"/nick {x}", False),
    ],
)
def test_looks_like_json(line, expected):
    assert looks_like_json(line) is expected


# ---------------------------------------------------------------------------
# Round trips, for every message type

# Any Unicode text except lone surrogates (which UTF-8 cannot carry), with
# emoji sequences mixed in because they are the usual trouble.
EMOJI_PARTS = ["🙂", "👍🏽", "👩\u200d💻", "🇫🇷", "\u200d", "\ufe0f"]
texts = st.lists(
    st.characters(codec="utf-8") | st.sampled_from(EMOJI_PARTS), max_size=30
).map("".join)
ints = st.integers(min_value=-(2**63), max_value=2**63)
numbers = st.floats(allow_nan=False, allow_infinity=False)


def maybe(strategy):
    return st.none() | strategy


chat_lines = st.builds(
    Message, ints, texts, texts, numbers, maybe(st.booleans()), maybe(texts)
)
names = st.lists(texts, max_size=5).map(tuple)

CLIENT_MESSAGES = {
    Hello: st.builds(Hello, texts, maybe(texts), maybe(ints)),
    Say: st.builds(Say, texts, maybe(st.booleans()), maybe(texts)),
    Private: st.builds(Private, texts, texts, maybe(texts)),
    Rename: st.builds(Rename, texts),
    Who: st.just(Who()),
    Ping: st.just(Ping()),
    Pong: st.just(Pong()),
    Bye: st.builds(Bye, maybe(texts)),
}
SERVER_MESSAGES = {
    Welcome: st.builds(
        Welcome, texts, names, st.lists(chat_lines, max_size=4).map(tuple)
    ),
    Message: chat_lines,
    PrivateMessage: st.builds(
        PrivateMessage, texts, texts, texts, numbers, maybe(texts)
    ),
    Joined: st.builds(Joined, texts),
    Left: st.builds(Left, texts, texts),
    Renamed: st.builds(Renamed, texts, texts),
    Users: st.builds(Users, names),
    Notice: st.builds(Notice, texts),
    Error: st.builds(Error, texts, texts, maybe(texts)),
    Ping: st.just(Ping()),
    Pong: st.just(Pong()),
}


def test_round_trip_strategies_cover_every_type():
    assert set(CLIENT_MESSAGES) == set(CLIENT_TYPES.values())
    assert set(SERVER_MESSAGES) == set(SERVER_TYPES.values())


def assert_one_line(data: bytes) -> bytes:
    """``data`` must come through the framing as exactly one line."""
    [line] = LineDecoder(max_line_bytes=len(data)).feed(data)
    assert isinstance(line, bytes)
    return line


@settings(max_examples=150, deadline=None)
@given(st.one_of(*CLIENT_MESSAGES.values()))
def test_client_messages_round_trip(message):
    assert decode_client(assert_one_line(encode(message))) == message


@settings(max_examples=150, deadline=None)
@given(st.one_of(*SERVER_MESSAGES.values()))
def test_server_messages_round_trip(message):
    assert decode_server(assert_one_line(encode(message))) == message


# ---------------------------------------------------------------------------
# Names

ACCEPTED_NAMES = [
    # (typed, kept as)
    ("alice", "alice"),
    ("Bob_2", "Bob_2"),
    ("_under", "_under"),
    ("9lives", "9lives"),
    ("a.b-c", "a.b-c"),
    ("Zoë", "Zoë"),
    ("e\u0301", "é"),  # e + combining acute, composed by NFKC
    ("名前", "名前"),
    ("Ωμέγα", "Ωμέγα"),
    ("x" * MAX_NAME_CHARS, "x" * MAX_NAME_CHARS),
    ("ａｌｉｃｅ", "alice"),  # full width
    ("𝐀𝐥𝐢𝐜𝐞", "Alice"),  # mathematical bold
    ("servers", "servers"),
]


@pytest.mark.parametrize("typed, kept", ACCEPTED_NAMES)
def test_check_name_accepts(typed, kept):
    assert check_name(typed) == kept


REFUSED_NAMES = [
    ("", "empty"),
    ("a b", "space"),
    (" alice", "leading space"),
    ("a\u00a0b", "no-break space"),
    ("a:b", "colon"),
    ("a@b", "at sign"),
    ("a/b", "slash"),
    ("bob\x1b[31m", "escape sequence"),
    ("bob\n", "newline"),
    ("bob\r", "carriage return"),
    ("\t", "tab"),
    ("ali\x00ce", "NUL"),
    ("ali\u200bce", "zero-width space"),
    ("ali\u202ece", "right-to-left override"),
    ("ali\u200dce", "zero-width joiner"),
    ("🙂", "emoji"),
    ("x" * (MAX_NAME_CHARS + 1), "25 characters"),
    ("ﬁ" * 13, "13 ligatures are 26 characters after NFKC"),
    ("-alice", "starts with punctuation"),
    (".alice", "starts with a dot"),
    ("\u0301a", "starts with a combining mark"),
    ("server", "reserved"),
    ("SERVER", "reserved, in capitals"),
    ("Server", "reserved, capitalised"),
    ("ｓｅｒｖｅｒ", "reserved, full width"),
    ("ſerver", "reserved, long s folds to s"),
]


@pytest.mark.parametrize(
    "name", [case[0] for case in REFUSED_NAMES], ids=[case[1] for case in REFUSED_NAMES]
)
def test_check_name_refuses(name):
    with pytest.raises(ProtocolError) as caught:
        check_name(name)
    assert caught.value.code == "bad_name"


SAME_NAMES = [
    ("Alice", "ALICE", "alice", "ａｌｉｃｅ", "𝐀𝐥𝐢𝐜𝐞", "𝐚𝐥𝐢𝐜𝐞", "ＡＬＩＣＥ"),
    ("straße", "STRASSE", "Strasse"),
    ("é", "e\u0301", "É", "E\u0301"),
    ("ΣΊΣΥΦΟΣ", "σίσυφος", "σίσυφοσ"),
]


@pytest.mark.parametrize("group", SAME_NAMES, ids=lambda group: group[0])
def test_name_key_folds_case_and_compatibility_forms(group):
    assert len({name_key(name) for name in group}) == 1


@pytest.mark.parametrize(
    "a, b", [("alice", "alicia"), ("bob", "b0b"), ("ana", "aña"), ("a.b", "a_b")]
)
def test_name_key_keeps_different_names_apart(a, b):
    assert name_key(a) != name_key(b)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_accepted_names_are_normal_printable_and_keyed_alike(typed):
    try:
        name = check_name(typed)
    except ProtocolError as exc:
        assert exc.code == "bad_name"
        return
    assert check_name(name) == name  # already in normal form
    assert 1 <= len(name) <= MAX_NAME_CHARS
    assert name_key(name) == name_key(typed)
    assert escape_text(name) == name  # safe to print as it is
    assert name_key(name) != "server"


# ---------------------------------------------------------------------------
# Escaping text for terminals

ESCAPED = [
    # (id, raw, shown)
    ("ESC", "\x1b[31mred", "\\x1b[31mred"),
    ("BEL", "ding\x07", "ding\\x07"),
    ("CR", "a\rserver: hi", "a\\rserver: hi"),
    ("LF", "a\nbob: hi", "a\\nbob: hi"),
    ("CRLF", "a\r\nb", "a\\r\\nb"),
    ("NUL", "a\x00b", "a\\x00b"),
    ("C1 CSI 0x9b", "\x9b2J", "\\x9b2J"),
    ("NEL 0x85", "a\x85b", "a\\x85b"),
    ("DEL", "a\x7fb", "a\\x7fb"),
    ("RLO U+202E", "abc\u202etxt.exe", "abc\\u202etxt.exe"),
    ("ZWSP U+200B", "ad\u200bmin", "ad\\u200bmin"),
    ("BOM U+FEFF", "\ufeffhi", "\\ufeffhi"),
    ("line separator U+2028", "a\u2028b", "a\\u2028b"),
    ("isolate U+2066", "a\u2066b", "a\\u2066b"),
    ("vertical tab", "a\x0bb", "a\\x0bb"),
]


@pytest.mark.parametrize(
    "raw, shown", [case[1:] for case in ESCAPED], ids=[case[0] for case in ESCAPED]
)
def test_escape_text_writes_controls_as_escapes(raw, shown):
    assert escape_text(raw) == shown


UNTOUCHED = [
    "plain words",
    "a\tb",  # tab is harmless
    "👩\u200d💻 and 👨\u200d👩\u200d👧",  # ZWJ sequences
    "\u200c",  # ZWNJ, needed by Persian
    "🙂👍🏽🇫🇷",
    "café naïve Ångström",
    "日本語のテキスト",
    "مرحبا بالعالم",
    "back\\slash \\n",  # already looks escaped: left alone
    "",
]


@pytest.mark.parametrize("text", UNTOUCHED)
def test_escape_text_leaves_ordinary_text_alone(text):
    assert escape_text(text) == text


DANGEROUS = (
    {chr(c) for c in range(0x202A, 0x202F)}
    | {chr(c) for c in range(0x2066, 0x206A)}
    | {"\u200b", "\u200e", "\u200f", "\ufeff", "\u061c"}
)


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters() | st.sampled_from([*sorted(DANGEROUS), "\x1b", "\x9b"])))
def test_escaped_text_is_one_safe_line(text):
    shown = escape_text(text)
    assert escape_text(shown) == shown  # idempotent
    assert len(shown.splitlines()) <= 1  # no line breaks of any kind
    for char in shown:
        assert char == "\t" or unicodedata.category(char) != "Cc", repr(char)
        assert char not in DANGEROUS, repr(char)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cc", "Cf", "Cn", "Zl", "Zp"))))
def test_text_without_controls_is_never_changed(text):
    assert escape_text(text) == text


@pytest.mark.parametrize(
    "filler",
    [
        *("\u115f", "\u1160", "\u3164", "\uffa0"),  # Hangul fillers
        *("\u034f", "\u17b4", "\u180b", "\ufe00", "\ufe0f", "\U000e0100"),  # marks
    ],
)
def test_invisible_letters_make_no_name(filler):
    # "alice" and "alice" with one of these after it would look the same.
    for name in (filler, f"a{filler}", f"{filler}{filler}", f"alice{filler}"):
        with pytest.raises(ProtocolError) as refused:
            check_name(name)
        assert "invisible" in refused.value.text


@pytest.mark.parametrize("name", ["-x", ".x", "\u0301x"])
def test_a_name_must_start_with_a_letter_digit_or_underscore(name):
    with pytest.raises(ProtocolError) as refused:
        check_name(name)
    assert "must start with" in refused.value.text


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        ("\U000e0041", "\\U000e0041"),
        ("\u0600", "\\u0600"),
        ("\U0001d173", "\\U0001d173"),
    ],
)
def test_more_invisible_format_characters_are_escaped(char, shown):
    assert escape_text(f"a{char}b") == f"a{shown}b"


@given(
    st.integers(min_value=0, max_value=2**53),
    st.text(min_size=1, max_size=24),
    st.text(),
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.sampled_from([None, True, False]),
    st.one_of(st.none(), st.text(max_size=40)),
)
def test_the_fast_message_encoder_writes_what_json_dumps_writes(
    id_, sender, text, ts, me, cid
):
    surrogate_free = [s for s in (sender, text, cid) if s is not None]
    assume(not any("\ud800" <= c <= "\udfff" for s in surrogate_free for c in s))
    message = Message(id_, sender, text, ts, me, cid)
    generic = json.dumps(to_dict(message), ensure_ascii=False, separators=(",", ":"))
    assert encode(message) == generic.encode("utf-8") + b"\n"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False)) | st.text(max_size=60),
    st.sampled_from(["", " ", "\t", " x", "}", "{}", "\r"]),
)
def test_the_quick_json_path_agrees_with_json_loads(text, tail):
    line = text + tail
    assume(not any("\ud800" <= c <= "\udfff" for c in line))  # not UTF-8 at all
    try:
        expected = json.loads(line)
    except (ValueError, RecursionError):
        expected = ProtocolError
    try:
        got = parse_json_line(line.encode("utf-8"))
    except ProtocolError:
        got = ProtocolError
    assert got == expected or (got != got and expected != expected)  # NaN
