"""What an identifier looks like, and when a dimension behaves like one (pure; no data, no engine).

The release gate applies these to the written report: the patterns inside DuckDB (``regexp_matches``
searches, it does not full-match: a value that *contains* an e-mail is refused) and in Python
(:func:`is_identifier_like`, the same patterns, for ``check`` and the tests); card numbers are
found in Python (:func:`has_card_number`: digit groups, the Luhn check) among the few values the
engine selects as candidates. Patterns are deliberately broad: a false alarm blocks a release, a
miss leaks a person.
"""

from __future__ import annotations

import re

# Patterns are deliberately broad: a false alarm blocks a release, a miss leaks a person.
PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}",
    "phone_in": r"(\+91[\-\s]?)?[6-9]\d{4}[\-\s]?\d{5}",
    "phone_intl": r"\+\d{1,3}[\-\s]?\(?\d{1,4}\)?([\-\s]?\d{2,4}){2,4}",
    "ipv4": r"\b((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)\b",
    # four or more colon-separated hex groups, or any '::' compression next to a hex group; a time
    # of day (12:30:45) has only three groups and is not an address
    "ipv6": r"\b([0-9A-Fa-f]{1,4}:){3,7}[0-9A-Fa-f]{1,4}\b|\b[0-9A-Fa-f]{1,4}::|::[0-9A-Fa-f]{1,4}\b",
    "pan": r"\b[A-Z]{3}[ABCFGHLJPTK][A-Z]\d{4}[A-Z]\b",
    "aadhaar": r"\b[2-9]\d{3}[\s\-]?\d{4}[\s\-]?\d{4}\b",
    "gstin": r"\b\d{2}[A-Z]{5}\d{4}[A-Z][1-9A-Z]Z[0-9A-Z]\b",
}


# A card number is written as one run of digits or as whole groups of one, split by single spaces
# or hyphens ("4111 1111 1111 1111", "12 4111-1111-1111-1111" holds one); ASCII digits only, as the
# engines' ``[0-9]``. Every span of whole groups with 13 to 19 digits is Luhn-checked.
CARD_RUN = r"[0-9]+(?:[ \-][0-9]+)*"
CARD_MIN_DIGITS = 13


# The identifier-value check compares *normal forms*, not spellings: a phone published as
# ``98 76 50 42 42`` or ``98765.04242``, a user id as `` 4242``, ``04242`` or ``4242.0``, a device id
# upper-cased or padded all name the same person. A value's forms (see :func:`normal_forms`):
# ``t:`` its text trimmed of ``WHITESPACE`` at both ends and lower-cased character by character
# (:func:`lower_simple`); ``n:`` its number, when it is a decimal number
# (``NUMBER``: optional sign, digits with an optional point, optional exponent) and finite;
# ``d:`` its digits alone, when there are at least ``DIGITS_MIN`` of them (phone numbers, long
# numeric ids; shorter digit runs are too common in ordinary values to mean anything). The grammar
# is written out because the engines' own parsers disagree at the edges (DuckDB reads ``+-0`` as
# -0.0, Python's float() reads ``1_0`` as 10): both sides apply it before parsing.
DIGITS_MIN = 7
# what trimming removes: ASCII space, tab, newline, vertical tab, form feed, carriage return (a CRLF
# file's last column) and the no-break space; written out because each engine's own trim removes a
# different set (DuckDB's keeps a tab, Python's str.strip() removes two dozen more characters)
WHITESPACE = " \t\n\x0b\x0c\r\xa0"
NUMBER = r"[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?"


QI_DISTINCT_RATIO = 0.5  # distinct dimension values / distinct units above this → quasi-identifier


QI_SINGLE_UNIT_SHARE = 0.5  # share of a dimension's values held by exactly one unit above this → QI


def luhn_ok(digits: str) -> bool:
    ds = [int(c) for c in digits if c.isdigit()]
    if not 13 <= len(ds) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(ds)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def is_identifier_like(value: str) -> str | None:
    """The first identifier pattern ``value`` matches, or None (used by tests and ``check``)."""
    for kind, pattern in PATTERNS.items():
        if re.search(pattern, value):
            return kind
    if has_card_number(value):
        return "card_number"
    return None


def has_card_number(value: str) -> bool:
    """Whether ``value`` holds a card number: a span of whole digit groups of a run
    (:data:`CARD_RUN`), 13 to 19 digits in all, that passes the Luhn check. Every run and every
    span is tried, so a digit run or group in front ("ref 1234567890123, card …", "12 4111 …")
    does not hide the number behind it. A value with fewer than :data:`CARD_MIN_DIGITS` ASCII
    digits holds none (the gate's SQL selects its candidates by that count)."""
    for m in re.finditer(CARD_RUN, value):
        groups = re.split(r"[ \-]", m.group(0))
        for i in range(len(groups)):
            digits = ""
            for g in groups[i:]:
                digits += g
                if len(digits) > 19:
                    break
                if len(digits) >= CARD_MIN_DIGITS and luhn_ok(digits):
                    return True
    return False


def lower_simple(text: str) -> str:
    """``text`` lower-cased character by character (Unicode's simple case mapping, as DuckDB's
    ``lower``): no context rule (a final capital sigma is σ, not ς) and U+0130 (İ) is ``i``, the
    one character whose full lower case is two characters."""
    return "".join("i" if c == "\u0130" else c.lower() for c in text)


def normal_forms(value: str) -> set[str]:
    """The normal forms of ``value`` (the rule above, in Python; the gate computes the same forms in
    SQL). Two values that share a form are treated as the same identifier."""
    text = value.strip(WHITESPACE)
    out = {"t:" + lower_simple(text)}
    x = float(text) if re.fullmatch(NUMBER, text) else None
    if x is not None and x == x and abs(x) != float("inf"):
        out.add(f"n:{x!r}")
    digits = re.sub(r"[^0-9]", "", value)
    if len(digits) >= DIGITS_MIN:
        out.add("d:" + digits)
    return out
