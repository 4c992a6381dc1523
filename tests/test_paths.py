"""`check_key`: which remote keys may become local paths (pure logic; the end-to-end refusal of
hostile keys is in test_once)."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from syncd.engine.paths import _SAFE, UnsafeKey, check_key, key_refusal, printable


@pytest.mark.parametrize(
    "key",
    ["a.txt", "dir/sub/file.bin", "spaces and ~tilde.txt", "été/日本.txt", "a..b/..c", "x" * 300],
)
def test_ordinary_keys_pass_unchanged(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty key"),
        ("ok\x00.txt", "contains NUL"),
        ("bell\x07.txt", "contains a control character"),
        ("tab\there.txt", "contains a control character"),
        ("line\nbreak.txt", "contains a control character"),
        ("unit\x1fsep.txt", "contains a control character"),
        ("del\x7f.txt", "contains a control character"),
        ("back\\slash.txt", "contains a backslash"),
        ("/etc/passwd", "absolute key"),
        ("a//b.txt", "empty path segment"),
        ("../escape.txt", "'..' segment"),
        ("a/./b.txt", "'.' segment"),
        ("bad\udcff.txt", "is not valid UTF-8"),  # os.fsdecode of b"bad\xff.txt"
        ("dir/lone\ud800", "is not valid UTF-8"),
    ],
)
def test_unsafe_keys_are_refused_with_the_reason(key: str, reason: str) -> None:
    with pytest.raises(UnsafeKey) as refused:
        check_key(key)
    assert str(refused.value) == reason


def test_characters_past_the_control_range_are_fine() -> None:
    key = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "/\\") + "\u0080\u00a0"
    assert check_key(key) == key


# Keys built from the characters every rule is about, so the generator meets each refusal often.
_KEY_PIECES = st.text(
    alphabet=st.sampled_from(
        ["a", "é", ".", "/", "\\", "\x00", "\x1f", "\x7f", " ", "~", "\udcff", "\ud800"]
    ),
    max_size=12,
)


@given(key=st.one_of(_KEY_PIECES, st.text(max_size=12)))
@settings(max_examples=2000, deadline=None)
def test_the_fast_path_accepts_exactly_what_the_rules_accept(key: str) -> None:
    """check_key's one-regex fast path never accepts a key one of its rules refuses, nor
    refuses one they accept."""
    assert bool(_SAFE.fullmatch(key)) == (key_refusal(key) is None)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain/été.txt", "plain/été.txt"),
        ("bad\udcff.txt", "bad\\xff.txt"),  # the byte that was not UTF-8
        ("line\nbreak\x7f", "line\\x0abreak\\x7f"),
        ("lone\ud800", "lone\\xed\\xa0\\x80"),
    ],
)
def test_printable_escapes_what_cannot_be_printed_on_one_line(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(text).encode("utf-8").decode("utf-8") == shown
