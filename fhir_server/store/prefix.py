"""String prefixes as ranges, so that "starts with" can seek an index in either store."""

from __future__ import annotations


def successor(prefix: str) -> str | None:
    """The least string after every string that starts with `prefix`, in code point order
    (SQLite's BINARY order of UTF-8 text and MongoDB's default string order alike); None
    when there is none (all U+10FFFF).

    Every string starting with `prefix` lies in `[prefix, successor(prefix))`, and no other.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            following = 0xE000 if 0xD800 <= last + 1 <= 0xDFFF else last + 1  # no surrogates
            return "".join(chars) + chr(following)
    return None
