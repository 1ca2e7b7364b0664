"""Tests for ``chat.wire``: chunks in, readable records out, no I/O.

Each rendering case is a row in a table.  Valid UTF-8 is also fed one byte
at a time and in every possible chunking: apart from the marks of cut
characters, the rendering must read the same however the bytes arrived.
Hypothesis then throws arbitrary bytes at it.
"""

from __future__ import annotations

import itertools
import random
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chat.wire import (
    BAD,
    CUT,
    ESCAPE,
    IN,
    MAX_SHOWN,
    NOTE,
    OUT,
    SPLIT,
    TEXT,
    Chunk,
    WireLog,
    WireRecord,
    clock,
    format_record,
    hex_pieces,
)

WAVE = "👋".encode()  # f0 9f 91 8b
assert len(WAVE) == 4
WHEN = 1_700_000_000.25


def feed_all(chunks, direction=IN, max_shown=MAX_SHOWN) -> list[WireRecord]:
    log = WireLog(max_shown)
    return [log.feed(direction, chunk, WHEN) for chunk in chunks]


def one(data: bytes, max_shown: int = MAX_SHOWN) -> WireRecord:
    return feed_all([data], max_shown=max_shown)[0]


def kinds(record: WireRecord) -> list[str]:
    return [span.kind for span in record.spans]


def without_cuts(records) -> str:
    """The rendering with the marks of cut characters left out."""
    return "".join(
        span.text for record in records for span in record.spans if span.kind != CUT
    )


def all_chunkings(data: bytes):
    """Every way to cut ``data`` into non-empty chunks."""
    for cuts in itertools.product((False, True), repeat=len(data) - 1):
        chunks, start = [], 0
        for at, cut in enumerate(cuts, start=1):
            if cut:
                chunks.append(data[start:at])
                start = at
        chunks.append(data[start:])
        yield chunks


# ---------------------------------------------------------------------------
# One chunk: (name, bytes, text, hex)

CASES = [
    (
        "a JSON line",
        b'{"type":"ping"}\n',
        '{"type":"ping"}⏎┃',
        "7b 22 74 79 70 65 22 3a  22 70 69 6e 67 22 7d 0a ┃",
    ),
    ("CRLF", b"hi\r\n", "hi\\r⏎┃", "68 69 0d 0a ┃"),
    (
        "several lines, the last unfinished",
        b"one\ntwo\nthr",
        "one⏎┃two⏎┃thr",
        "6f 6e 65 0a ┃ 74 77 6f 0a ┃  74 68 72",
    ),
    ("an empty line", b"\n", "⏎┃", "0a ┃"),
    ("tab, escape, NUL, DEL", b"a\tb\x1b[1m\x00\x7f", "a\\tb\\x1b[1m\\x00\\x7f", None),
    ("accents, CJK, emoji", "é 世界 👋".encode(), "é 世界 👋", None),
    ("emoji with a skin tone", "👋🏽".encode(), "👋🏽", None),
    ("zero-width joiner", "🧑\u200d💻".encode(), "🧑\\u200d💻", None),
    (
        "invisible and bidi characters",
        "a\u200bb\u202ec\u00a0d\u0085".encode(),
        "a\\u200bb\\u202ec\\u00a0d\\u0085",
        None,
    ),
    ("a tag character", "\U000e0041".encode(), "\\U000e0041", "f3 a0 81 81"),
    ("a JSON escape is text", b'"a\\nb"', '"a\\nb"', None),
    ("an invalid byte", b"a\xffb", "a\\xffb", "61 ff 62"),
    ("a lone continuation byte", b"\x80", "\\x80", "80"),
    ("an overlong slash", b"\xc0\xaf", "\\xc0\\xaf", None),
    ("an overlong 3-byte form", b"\xe0\x80\xaf", "\\xe0\\x80\\xaf", None),
    ("a surrogate", b"\xed\xa0\x80", "\\xed\\xa0\\x80", None),
    ("past U+10FFFF", b"\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80", None),
    ("a character broken off mid-chunk", b"\xe2\x82A", "\\xe2\\x82A", None),
    ("spaces are spaces", b"a  b ", "a  b ", "61 20 20 62 20"),
]


@pytest.mark.parametrize(
    ("data", "text", "hex_text"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_chunk_is_rendered(data, text, hex_text):
    record = one(data)
    assert record.text == text
    assert record.size == len(data)
    assert record.shown == data
    assert record.line_ends == tuple(m.end() for m in re.finditer(b"\n", data))
    assert (record.head_cut, record.tail_cut) == (0, 0)
    if hex_text is not None:
        assert record.hex == hex_text


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"hi\r\n", [TEXT, ESCAPE, ESCAPE, SPLIT]),
        (b"a\nb\n", [TEXT, ESCAPE, SPLIT, TEXT, ESCAPE, SPLIT]),
        (b'"a\\nb"', [TEXT]),  # a JSON escape is two characters of text
        ("héllo wörld".encode(), [TEXT]),  # one span for a run of text
        (b"a\xffb", [TEXT, BAD, TEXT]),
        ("x\u200by".encode(), [TEXT, ESCAPE, TEXT]),
    ],
)
def test_the_kinds_of_span(data, expected):
    assert kinds(one(data)) == expected


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_spans_cover_every_shown_byte_once_in_order(case):
    record = one(case[1])
    at = 0
    for span in record.spans:
        assert span.start == at
        at = span.end
    assert at == len(record.shown)


def test_a_line_split_falls_after_each_newline():
    record = one(b"a\nbc\r\nd")
    assert record.line_ends == (2, 6)
    splits = [span.start for span in record.spans if span.kind == SPLIT]
    assert splits == [2, 6]


# ---------------------------------------------------------------------------
# Characters cut between chunks


@pytest.mark.parametrize(
    ("char", "cut"),
    [(char, cut) for char in ("é", "€", "👋") for cut in range(1, len(char.encode()))],
)
def test_a_character_cut_between_two_chunks_is_marked_in_both(char, cut):
    data = char.encode()
    first, second = feed_all([b"x" + data[:cut], data[cut:] + b"y\n"])
    assert first.text == f"x⟨{data[:cut].hex(' ')}…⟩"
    assert (first.head_cut, first.tail_cut) == (0, cut)
    assert kinds(first) == [TEXT, CUT]
    assert second.text == f"⟨…{data[cut:].hex(' ')}⟩{char}y⏎┃"
    assert (second.head_cut, second.tail_cut) == (len(data) - cut, 0)
    assert kinds(second)[:2] == [CUT, TEXT]
    assert second.line_ends == (len(data) - cut + 2,)


def test_an_emoji_one_byte_at_a_time():
    records = feed_all([WAVE[i : i + 1] for i in range(4)])
    assert [r.text for r in records] == ["⟨f0…⟩", "⟨…9f…⟩", "⟨…91…⟩", "⟨…8b⟩👋"]
    assert [(r.head_cut, r.tail_cut) for r in records] == [
        (0, 1),
        (1, 1),  # wholly inside the character: both
        (1, 1),
        (1, 0),
    ]


def test_an_emoji_in_three_chunks():
    records = feed_all([b"a" + WAVE[:1], WAVE[1:3], WAVE[3:] + b"b"])
    assert [r.text for r in records] == ["a⟨f0…⟩", "⟨…9f 91…⟩", "⟨…8b⟩👋b"]


def test_a_cut_invisible_character_is_shown_escaped_once_finished():
    data = "\u200b".encode()
    _, second = feed_all([data[:1], data[1:]])
    assert second.text == "⟨…80 8b⟩\\u200b"
    assert kinds(second) == [CUT, ESCAPE]


TEXT_WITH_EVERYTHING = "a👋é\n€\r\n"


def test_every_chunking_reads_the_same():
    """All 4096 ways to cut 13 bytes: an emoji, é, € and CRLF cut everywhere."""
    data = TEXT_WITH_EVERYTHING.encode()
    whole = one(data)
    assert whole.text == "a👋é⏎┃€\\r⏎┃"
    for chunks in all_chunkings(data):
        records = feed_all(chunks)
        assert without_cuts(records) == whole.text, chunks
        assert all(BAD not in kinds(record) for record in records), chunks
        for before, after in itertools.pairwise(records):
            assert bool(before.tail_cut) == bool(after.head_cut), chunks
        assert records[-1].tail_cut == 0
        offsets = itertools.accumulate([0, *(r.size for r in records[:-1])])
        line_ends = [
            at + end
            for at, record in zip(offsets, records, strict=True)
            for end in record.line_ends
        ]
        assert line_ends == list(whole.line_ends), chunks


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Only valid text: the end of a chunk cannot know that a character will
# never be finished, so invalid bytes cut in two read differently.
VALID_CASES = [case for case in CASES if is_utf8(case[1])]


@pytest.mark.parametrize("case", VALID_CASES, ids=[case[0] for case in VALID_CASES])
def test_valid_text_reads_the_same_fed_one_byte_at_a_time(case):
    data = case[1]
    records = feed_all([data[i : i + 1] for i in range(len(data))])
    assert without_cuts(records) == one(data).text


def test_random_chunkings_of_a_conversation_read_the_same():
    text = "".join(
        f'{{"type":"say","text":"línea {i} 👋🏽 世界\\n"}}\r\n' for i in range(20)
    ).encode()
    whole = one(text, max_shown=len(text))
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(text)), 30))
        chunks = [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]
        assert without_cuts(feed_all(chunks, max_shown=len(text))) == whole.text


def test_a_cut_character_that_is_never_finished():
    first, second = feed_all([b"x\xf0\x9f", b"y"])
    assert first.tail_cut == 2
    assert second.text == "⟨…never finished⟩y"
    assert second.head_cut == 0
    *_, third = feed_all([b"\xf0", b"\x9fA"])
    assert third.text == "⟨…never finished⟩\\x9fA"


def test_directions_keep_their_own_cut_characters():
    log = WireLog()
    log.feed(OUT, b"a" + WAVE[:2], WHEN)
    received = log.feed(IN, WAVE[2:] + b"b", WHEN)  # not the same stream
    assert received.text == "\\x91\\x8bb"
    assert received.head_cut == 0
    sent = log.feed(OUT, WAVE[2:] + b"c", WHEN)
    assert sent.text == "⟨…91 8b⟩👋c"


def test_the_end_of_a_stream():
    (record,) = feed_all([b""])
    assert (record.size, record.text, record.hex) == (0, "(end of stream)", "")
    assert kinds(record) == [NOTE]
    records = feed_all([b"\xf0", b"", b"\x9f"])
    assert records[1].text == "(end of stream, inside a character)"
    assert records[2].text == "\\x9f"  # a new stream does not go on with it


def test_reset_forgets_cut_characters():
    log = WireLog()
    log.feed(IN, WAVE[:2], WHEN)
    log.reset()
    assert log.feed(IN, WAVE[2:], WHEN).text == "\\x91\\x8b"


# ---------------------------------------------------------------------------
# Long chunks


def test_a_long_chunk_is_shown_up_to_the_cap():
    record = one(b"a" * 1000, max_shown=256)
    assert record.text == "a" * 256 + " … (744 more bytes)"
    assert (record.size, len(record.shown), record.hidden) == (1000, 256, 744)
    assert record.hex.endswith("61 …")
    assert one(b"a" * 257, max_shown=256).text.endswith(" … (1 more byte)")
    assert one(b"a" * 256, max_shown=256).text == "a" * 256


def test_a_character_on_the_cap_is_shown_whole():
    record = one(b"a" * 255 + "é".encode() + b"bc", max_shown=256)
    assert record.text == "a" * 255 + "é … (2 more bytes)"
    assert len(record.shown) == 257


def test_lines_past_the_cap_are_still_counted():
    record = one(b"a\n" * 500, max_shown=10)
    assert len(record.line_ends) == 500
    assert [s.kind for s in record.spans].count(SPLIT) == 5


def test_a_cut_past_the_cap_is_still_followed():
    first, second = feed_all([b"a" * 1000 + WAVE[:2], WAVE[2:]], max_shown=256)
    assert first.tail_cut == 2
    assert first.text.endswith(" … (746 more bytes)")
    assert second.text == "⟨…91 8b⟩👋"


def test_the_default_cap():
    assert one(b"x" * (MAX_SHOWN + 5)).hidden == 5


# ---------------------------------------------------------------------------
# Hex, time, the console's lines


def test_hex_is_grouped_by_eight():
    record = one(bytes(range(0x30, 0x41)))
    assert record.hex == ("30 31 32 33 34 35 36 37  38 39 3a 3b 3c 3d 3e 3f  40")


def test_hex_pieces_follow_the_spans():
    record = one(b"a\r\n\xff")
    assert hex_pieces(record) == [
        ("61", TEXT),
        (" ", ""),
        ("0d", ESCAPE),
        (" ", ""),
        ("0a", ESCAPE),
        (" ", ""),
        ("┃", SPLIT),
        (" ", ""),
        ("ff", BAD),
    ]
    digits = one(b"0123456789\xff", max_shown=11)
    assert hex_pieces(digits) == [
        ("30 31 32 33 34 35 36 37  38 39", TEXT),  # one span, two groups
        (" ", ""),
        ("ff", BAD),
    ]
    capped = one(b"0123456789\xff", max_shown=10)
    assert hex_pieces(capped)[-2:] == [(" ", ""), ("…", NOTE)]


def test_the_clock_is_local_time_to_the_millisecond():
    midnight_ish = time.mktime((2026, 3, 4, 5, 6, 7, 0, 0, -1))
    assert clock(midnight_ish + 0.0891) == "05:06:07.089"
    assert clock(midnight_ish + 0.9999) == "05:06:07.999"
    assert one(b"x").clock == clock(WHEN)


def test_arrows_say_the_direction():
    log = WireLog()
    assert log.feed(OUT, b"x", WHEN).arrow == "→"
    assert log.feed(IN, b"x", WHEN).arrow == "←"


def test_format_record_for_a_terminal():
    data = b'{"type":"hello","name":"ada"}\n'
    lines = format_record(WireLog().feed(OUT, data, WHEN))
    assert lines[0] == f'→ {clock(WHEN)}     30 B  {{"type":"hello","name":"ada"}}⏎┃'
    indent = " " * lines[0].index("{")
    assert lines[1:] == [
        indent + "7b 22 74 79 70 65 22 3a  22 68 65 6c 6c 6f 22 2c",
        indent + "22 6e 61 6d 65 22 3a 22  61 64 61 22 7d 0a ┃",
    ]
    assert format_record(WireLog().feed(IN, b"", WHEN)) == [
        f"← {clock(WHEN)}      0 B  (end of stream)"
    ]


def test_a_chunk_tuple_feeds_a_log():
    chunk = Chunk(OUT, b"hi\n", WHEN)
    assert WireLog().feed(*chunk).text == "hi⏎┃"


def test_misuse_is_a_value_error():
    with pytest.raises(ValueError):
        WireLog().feed("sideways", b"x", WHEN)
    with pytest.raises(ValueError):
        WireLog(max_shown=0)


# ---------------------------------------------------------------------------
# Anything at all


@given(st.binary(max_size=64), st.lists(st.integers(0, 64), max_size=8))
def test_any_bytes_in_any_chunking(data, cut_points):
    cuts = sorted({c for c in cut_points if c <= len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]
    records = feed_all([c for c in chunks if c], max_shown=16)
    assert sum(r.size for r in records) == len(data)
    for record in records:
        at = 0
        for span in record.spans:
            assert span.start == at <= span.end
            at = span.end
            assert span.text.isprintable()  # one line, nothing a terminal obeys
        assert at == len(record.shown) <= record.size
        assert len(re.findall(r"[0-9a-f]{2}", record.hex)) == len(record.shown)


@given(st.text(max_size=30), st.lists(st.integers(1, 120), max_size=6))
def test_any_text_in_any_chunking_reads_the_same(text, cut_points):
    data = text.encode()
    cuts = sorted({c for c in cut_points if c < len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]
    records = feed_all([c for c in chunks if c], max_shown=len(data) + 1)
    whole = one(data, max_shown=len(data) + 1) if data else None
    assert without_cuts(records) == (whole.text if whole else "")
    assert all(BAD not in kinds(r) for r in records)


# ---------------------------------------------------------------------------
# Review: characters that print as nothing at all


# Python calls these printable, yet they draw nothing (Unicode's "default
# ignorable" letters and marks, and the blank braille cell): shown as
# themselves, a line that looks empty or a name that looks like another's
# can hide text, and variation selectors can smuggle bytes inside an emoji.
INVISIBLE_PRINTABLES = [
    ("hangul filler", "a\u3164b", "a\\u3164b"),
    ("hangul choseong filler", "\u115f", "\\u115f"),
    ("hangul jungseong filler", "\u1160", "\\u1160"),
    ("halfwidth hangul filler", "\uffa0", "\\uffa0"),
    ("combining grapheme joiner", "a\u034fb", "a\\u034fb"),
    ("khmer inherent vowel", "\u17b4\u17b5", "\\u17b4\\u17b5"),
    ("mongolian variation selector", "\u180b\u180f", "\\u180b\\u180f"),
    ("emoji variation selector", "❤\ufe0f", "❤\\ufe0f"),
    ("a byte hidden in a variation selector", "😀\U000e0100", "😀\\U000e0100"),
    ("braille blank", "a\u2800b", "a\\u2800b"),
]


@pytest.mark.parametrize(
    ("text", "shown"),
    [case[1:] for case in INVISIBLE_PRINTABLES],
    ids=[case[0] for case in INVISIBLE_PRINTABLES],
)
def test_printable_but_invisible_characters_are_escaped(text, shown):
    data = text.encode()
    assert one(data).text == shown
    assert ESCAPE in kinds(one(data))
    records = feed_all([data[i : i + 1] for i in range(len(data))])
    assert without_cuts(records) == shown
