"""PII redaction: what must go, and the look-alikes that must stay."""

from __future__ import annotations

import pytest

from council.core.pii import luhn_ok, redact, redact_counts


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mail first.last+news@mail.eu.example.com now", "mail [EMAIL] now"),
        ("ask bob@x.io.", "ask [EMAIL]."),
        ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
        ("card 4111-1111-1111-1111.", "card [CARD]."),
        ("card 4111111111111111", "card [CARD]"),
        ("amex 3782 822463 10005", "amex [CARD]"),
        ("call +1 (555) 123-4567 today", "call [PHONE] today"),
        ("call 555-123-4567 or 555.123.4567", "call [PHONE] or [PHONE]"),
        ("uk +44 20 7946 0958 / 020 7946 0958", "uk [PHONE] / [PHONE]"),
        ("fr 06 12 34 56 78", "fr [PHONE]"),
        ("host 192.168.1.20:8080 down", "host [IP]:8080 down"),
        ("gateway 10.0.0.1.", "gateway [IP]."),
        ("v6 2001:db8::8a2e:370:7334 and fe80::1", "v6 [IP] and [IP]"),
        ("loopback [::1]:8080", "loopback [[IP]]:8080"),
        ("mapped ::ffff:192.0.2.1 end", "mapped [IP] end"),
        ("key sk-proj-abcdefghijklmnop1234", "key [API_KEY]"),
        ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", "gh [API_KEY]"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [API_KEY]"),
        ("Authorization: Bearer abcdef1234567890abcdef", "Authorization: Bearer [API_KEY]"),
        ("hex d41d8cd98f00b204e9800998ecf8427e", "hex [API_KEY]"),
        ("b64 Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MGFiY2RlZkdISUpL", "b64 [API_KEY]"),
    ],
)
def test_redacts(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Released on 2026-11-22 at 10:30:45, see 2026-11-22T10:30:00Z",
        "upgrade to v1.2.3 or 1.2.3 or v1.2.3.4 (build 10.0.19041.1)",
        "pi is 3.14159 or 3.14159265358979",
        "dates 22.11.2026 and 01-02-2026 and the years 1990-2020",
        "not a card: 1234 5678 9012 3456 or 1234567812345678",
        "octets too large: 256.1.1.1 and 999.10.10.10",
        "C++ std::vector, a::b, ratio 3:2 and mac 00:1A:2B:3C:4D:5E",
        "uuid 550e8400-e29b-41d4-a716-446655440000",
        "path /usr/lib/python3.11/site-packages/transformers/models/llama",
        "word Supercalifragilisticexpialidocious1234 and order number 12345",
    ],
)
def test_leaves_lookalikes(text):
    assert redact(text) == text


def test_counts_by_kind_and_luhn():
    text, counts = redact_counts("a@b.co, c@d.org, 4111 1111 1111 1111, 8.8.8.8, sk-abcdefghijklmnopqrstuvwx")
    assert counts == {"EMAIL": 2, "CARD": 1, "IP": 1, "API_KEY": 1}
    assert "@" not in text and "8.8.8.8" not in text
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert redact("") == "" and redact_counts("plain text") == ("plain text", {})
