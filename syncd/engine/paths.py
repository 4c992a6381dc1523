"""The rules that map remote keys to local paths and back, and the names syncd keeps to itself.

Every key from a remote goes through `check_key` before it is used to build a local path: this
is where "nothing outside a pair's root is ever touched" is enforced for input we do not control.
"""

from __future__ import annotations

import re
import unicodedata

#: Prefix of temporary download files; the watcher and scanner ignore them.
TEMP_PREFIX = ".syncd-tmp-"
#: Temp files of resumable large downloads: kept across restarts (the state DB knows them).
RESUME_PREFIX = TEMP_PREFIX + "resume-"
#: The names syncd gives its temp files (the prefix, then 12 or 16 random hex digits: see
#: `localfs.temp_name`, the resumable downloads, the folder remote's uploads). Only these
#: are ignored, and removed once abandoned: a user's own `.syncd-tmp-notes` is a file like
#: any other, synced and never removed behind their back.
OWN_TEMP = re.compile(r"\.syncd-tmp-(?:resume-)?(?:[0-9a-f]{12}|[0-9a-f]{16})")
#: syncd's own folder inside each local root (trash, later journals); never synced.
STATE_DIR = ".syncd"
#: Remote prefix under which losing / deleted remote versions are kept.
REMOTE_TRASH = ".syncd-trash"


#: C0 control characters and DEL (one search instead of a Python loop over every character of
#: every listed key).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Lone surrogates: what Python makes of bytes that are not UTF-8 in a file name (os.fsdecode's
#: surrogateescape); no remote key, and no row of the state, can hold one.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: A key none of check_key's refusals can apply to: segments of anything but control
#: characters, surrogates, backslash and '/', none of them '.' or '..', joined by single slashes.
_SAFE = re.compile(
    r"(?!\.\.?(?:/|$))[^\x00-\x1f\x7f\\/\ud800-\udfff]+"
    r"(?:/(?!\.\.?(?:/|$))[^\x00-\x1f\x7f\\/\ud800-\udfff]+)*"
)


class UnsafeKey(ValueError):
    """A remote key that must not be mapped onto the local filesystem."""


def normalize(path: str) -> str:
    """Paths are compared as NFC, so an NFD name on one side and NFC on the other are one file."""
    return unicodedata.normalize("NFC", path)


def is_plain_key(key: str) -> bool:
    """True when none of check_key's refusals can apply (one regex match, the common case)."""
    return _SAFE.fullmatch(key) is not None


def check_key(key: str) -> str:
    """Return the relative path for a remote key, or raise UnsafeKey saying why.

    Refused: empty keys, absolute keys, '.' / '..' / empty segments, NUL and other control
    characters, backslashes, names that are not valid UTF-8 (a local file name's bytes).
    Folder markers (keys ending in '/') are the caller's to skip.
    A name too long for the local filesystem is not unsafe: its download fails, per file
    (before a byte is fetched: `localfs.check_name_fits`).
    """
    if is_plain_key(key):
        return key  # the common case: one scan of the key, no refusal possible
    reason = key_refusal(key)
    if reason is not None:
        raise UnsafeKey(reason)
    return key


def key_refusal(key: str) -> str | None:
    """Why check_key refuses `key`, or None: each rule on its own, for the message."""
    if not key:
        return "empty key"
    if "\x00" in key:
        return "contains NUL"
    if _CONTROL.search(key):
        return "contains a control character"
    if "\\" in key:
        return "contains a backslash"
    if _SURROGATE.search(key):
        return "is not valid UTF-8"
    if key.startswith("/"):
        return "absolute key"
    for part in key.split("/"):
        if part == "":
            return "empty path segment"
        if part in (".", ".."):
            return f"'{part}' segment"
    return None


def printable(text: str) -> str:
    """`text` fit to print on one line and to store: bytes that are not UTF-8 (a file name's
    surrogate escapes) and control characters shown as `\\xNN`, the rest as it is."""
    if text.isprintable() and not _SURROGATE.search(text):
        return text
    raw = text.encode("utf-8", "surrogateescape" if _escapes_only(text) else "surrogatepass")
    shown = raw.decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", shown)


def _escapes_only(text: str) -> bool:
    """Every surrogate in `text` is one os.fsdecode makes of an undecodable byte."""
    return all("\udc80" <= each <= "\udcff" for each in _SURROGATE.findall(text))


def is_internal(path: str) -> bool:
    """True for paths syncd keeps to itself: its folder, remote trash and temp files."""
    first, _, _ = path.partition("/")
    if first in (STATE_DIR, REMOTE_TRASH):
        return True
    return is_own_temp(path.rsplit("/", 1)[-1])


def is_own_temp(name: str) -> bool:
    """A file name syncd gives its temp files (OWN_TEMP)."""
    return name.startswith(TEMP_PREFIX) and OWN_TEMP.fullmatch(name) is not None


def is_folder_marker(key: str) -> bool:
    """Keys ending in '/' are zero-byte 'folder' objects some tools create; skipped quietly."""
    return key.endswith("/")
