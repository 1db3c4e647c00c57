"""PII redaction to typed placeholders: every text harvest sends to a model or writes to a file passes through
``redact``, and so does every past exchange the server puts in the prompt of a remote (not ``local/``) model
(``council/routing/router.py``).

What is replaced, in this order, and how it is recognised:

``[EMAIL]``
    ``local@domain.tld`` with ``.``, ``+``, ``%``, ``-`` and ``_`` in the local part and any number of
    sub-domains (``first.last+tag@mail.eu.example.com``).
``[API_KEY]``
    Known token shapes: OpenAI/Anthropic ``sk-...`` (16+ chars after the prefix), GitHub ``ghp_``/``gho_``/
    ``ghu_``/``ghs_``/``ghr_``/``github_pat_``, AWS access key ids ``AKIA``/``ASIA`` + 16, Slack ``xox?-``,
    Google ``AIza`` + 35, ``Bearer <token>``; plus generic secrets: a run of 32+ hex digits, or a run of 32+
    base64/url-safe characters with at least two each of upper case, lower case and digits and a Shannon
    entropy of at least 4.2 bits per character (so long words, paths and UUIDs stay; a 32+ character
    CamelCase identifier with digits can still be taken for a key).
``[IP]``
    IPv6 (any form ``ipaddress`` accepts with 2+ colons and a digit, incl. ``::1`` and ``::ffff:192.0.2.1``,
    also inside ``[...]``; ``10:30:45`` and ``std::vector`` stay) and
    dotted-quad IPv4 with every octet 0-255, not glued to letters, digits or further dots, so ``v1.2.3.4``,
    ``1.2.3`` and ``10.0.19041.1`` stay. A ``:port`` after an address is kept (``[IP]:8080``).
``[CARD]``
    13-19 digits, contiguous or in 4-4-4-4(-x) / 4-6-5 groups separated by one space or dash, that pass the
    Luhn check. A 16-digit number that fails Luhn is left alone.
``[PHONE]``
    ``+`` followed by a country code and 8-15 digits in all (separators ``space . - ( )``);
    ``(area) 123-4567``; North-American ``123-456-7890`` / ``123.456.7890`` / ``123 456 7890`` (one
    separator used throughout); trunk-prefixed national numbers ``0...`` in 3+ groups with 9-12 digits
    (``020 7946 0958``, ``06 12 34 56 78``). Bare digit runs, dates (``2026-11-22``, ``22.11.2026``), times,
    versions (``v1.2.3``) and decimals (``3.14159``) are not phones.

Usage: ``redact(text)`` -> text; ``redact_counts(text)`` -> (text, {"EMAIL": n, ...}).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter

EMAIL, PHONE, CARD, IP, API_KEY = "[EMAIL]", "[PHONE]", "[CARD]", "[IP]", "[API_KEY]"

_EMAIL_RE = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b")

_KNOWN_KEY_RE = re.compile(
    r"(?<![\w-])(?:"
    r"sk-[A-Za-z0-9_-]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r")(?![\w-])"
)
_BEARER_RE = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/-]{16,}=*")
_HEX_RE = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{32,}(?![0-9A-Za-z])")
_B64_RE = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_=-])")

_IPV6_CANDIDATE_RE = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f:]*:[0-9A-Fa-f:]*(?:\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4_RE = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")

_CARD_RE = re.compile(
    r"(?<![\d.-])(?:"
    r"\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?"
    r"|\d{4}([ -])\d{6}\2\d{5}"
    r"|\d{13,19}"
    r")(?![\d]|[.-]\d)"
)

_PHONE_RES = (
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?![\d]|[.-]\d)"),
    re.compile(r"(?<![\w)])\(\d{2,4}\)[ ]?\d{3,4}[ .-]?\d{3,4}(?![\d]|[.-]\d)"),
    re.compile(r"(?<![\w.-])\d{3}([ .-])\d{3}\1\d{4}(?![\w]|[.-]\d)"),
    re.compile(r"(?<![\w.+-])0\d{1,4}(?:[ -]\d{2,4}){2,4}(?![\w]|[.-]\d)"),
)
_PHONE_DIGITS = {0: (8, 15), 1: (9, 12), 2: (10, 10), 3: (9, 12)}


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum that every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _looks_like_secret(token: str) -> bool:
    body = token.rstrip("=")
    return (
        sum(c.isupper() for c in body) >= 2
        and sum(c.islower() for c in body) >= 2
        and sum(c.isdigit() for c in body) >= 2
        and _entropy(body) >= 4.2
    )


class _Counted:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def sub(self, pattern: re.Pattern[str], text: str, kind: str, check=None) -> str:
        placeholder = f"[{kind}]"

        def replace(match: re.Match[str]) -> str:
            if check is not None and not check(match.group(0)):
                return match.group(0)
            self.counts[kind] += 1
            return placeholder

        return pattern.sub(replace, text)


def _ipv6_ok(candidate: str) -> bool:
    if candidate.count(":") < 2 or not any(c.isdigit() for c in candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _card_ok(candidate: str) -> bool:
    return luhn_ok(re.sub(r"[ -]", "", candidate))


def _phone_check(index: int):
    low, high = _PHONE_DIGITS[index]

    def check(candidate: str) -> bool:
        return low <= sum(c.isdigit() for c in candidate) <= high

    return check


def redact_counts(text: str) -> tuple[str, dict[str, int]]:
    """Replace PII in ``text`` with typed placeholders; also return how many of each kind were replaced."""
    if not text:
        return text, {}
    c = _Counted()
    text = c.sub(_EMAIL_RE, text, "EMAIL")
    text = c.sub(_KNOWN_KEY_RE, text, "API_KEY")

    def bearer(match: re.Match[str]) -> str:
        c.counts["API_KEY"] += 1
        return match.group(1) + API_KEY

    text = _BEARER_RE.sub(bearer, text)
    text = c.sub(_HEX_RE, text, "API_KEY")
    text = c.sub(_B64_RE, text, "API_KEY", _looks_like_secret)
    text = c.sub(_IPV6_CANDIDATE_RE, text, "IP", _ipv6_ok)
    text = c.sub(_IPV4_RE, text, "IP")
    text = c.sub(_CARD_RE, text, "CARD", _card_ok)
    for index, pattern in enumerate(_PHONE_RES):
        text = c.sub(pattern, text, "PHONE", _phone_check(index))
    return text, dict(c.counts)


def redact(text: str) -> str:
    """``text`` with e-mails, phones, card numbers, IPs and API keys replaced by [EMAIL], [PHONE], ..."""
    return redact_counts(text)[0]
