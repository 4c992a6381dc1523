"""Human-friendly sizes and rates in the config file: `64MiB`, `1.5 GB`, `20MB/s`.

Both binary (KiB = 1024) and decimal (KB = 1000) units are accepted because people copy values
from tools that use either; the unit they wrote is the unit they get.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}

_SIZE = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[a-z]*)\s*$")
_PER_SECOND = re.compile(r"\s*/\s*(?:s|sec)\s*$")

_HINT = "use a number of bytes or a unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"


def parse_size(value: object) -> int:
    """A size in bytes from an int or a string such as `64MiB`, `16 MiB`, `1.5GiB` or `1000`.

    Units are case-insensitive. A fractional value must come out as a whole number of bytes,
    so `1.5KiB` is fine and `0.3B` is an error rather than a silent rounding.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size ({_HINT})")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative (got {value})")
        return value
    if isinstance(value, float):
        if value < 0 or not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number of bytes")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 64MiB ({_HINT})")
    match = _SIZE.match(value.lower())
    if match is None or match["unit"] not in _UNITS:
        raise ValueError(f"{value!r} is not a size ({_HINT})")
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover - the regex only lets digits through
        raise ValueError(f"{value!r} is not a size ({_HINT})") from None
    total = number * _UNITS[match["unit"]]
    if total != total.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(total)


def parse_rate(value: object) -> int:
    """A transfer rate in bytes per second: `20MB/s`, `20MB`, `1.5 MiB/s` or a bare number.

    The `/s` suffix is optional because a rate in a config key named `..._limit` can only be per
    second; accepting both spellings saves a round-trip through the error message.
    """
    if isinstance(value, str):
        stripped = _PER_SECOND.sub("", value)
        if stripped != value and not stripped.strip():
            raise ValueError(f"{value!r} is not a rate (expected e.g. 20MB/s)")
        try:
            return parse_size(stripped)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a rate (expected e.g. 20MB/s, 512KiB/s or bytes per second)"
            ) from None
    try:
        return parse_size(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate (expected e.g. 20MB/s)") from None
