"""Personal-data scrubbing for every free-text string that reaches an alert email, and
the one-line clipping applied to it."""

from __future__ import annotations

import re

# ISO dates and timestamps are kept verbatim: reasons carry them (cooldown ends) and the
# phone pattern would otherwise read ``2026-07-01`` as a number.
_ISO_DATETIME = re.compile(
    r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_URL_WITH_QUERY = re.compile(r"\b(?:https?|ftp)://[^\s<>\"']*\?[^\s<>\"']*", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CARD = re.compile(r"(?<![\w.+])\d(?:[ -]?\d){12,18}(?![\w]|\.\d)")
_PHONE = re.compile(
    r"(?<![\w.+-])(?<!\d:)"  # not inside a word, number or time
    r"(?:\+\d{1,3}[ .-]?)?"  # country code
    r"(?:\(\d{1,5}\)[ .-]?)?"  # area code in parentheses
    r"\d{1,12}(?:[ .-]\d{1,12}){0,6}"
    r"(?![\w]|[.-]\d)"
)


def _scrub_iban(match: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in match.group())
    return "[IBAN]" if digits >= 10 else match.group()


def _scrub_phone(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(c.isdigit() for c in text)
    local = re.sub(r"^(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?", "", text)
    separators = set(re.findall(r"(?<=\d)[ .-](?=\d)", local))
    # A decimal point next to other separators is a list of numbers ("0.12 0.34"),
    # and one alone between two runs is a decimal ("12345.678").
    if "." in separators and (len(separators) > 1 or re.fullmatch(r"\d+\.\d+", local)):
        return text
    # Bare runs of 8 digits are often counts or codes; separated groups or a country
    # code read as a phone number from 8 digits on.
    separated = bool(separators) or text.startswith(("+", "("))
    if 8 <= digits <= 15 and (separated or digits >= 9):
        return "[PHONE]"
    return text


def _scrub_segment(text: str) -> str:
    text = _URL_WITH_QUERY.sub("[URL]", text)
    text = _EMAIL.sub("[EMAIL]", text)
    text = _IBAN.sub(_scrub_iban, text)
    text = _CARD.sub("[CARD]", text)
    return _PHONE.sub(_scrub_phone, text)


def scrub_pii(text: str) -> str:
    """Replace personal data in free text with placeholders.

    Emails become ``[EMAIL]``, phone numbers ``[PHONE]``, IBANs ``[IBAN]``, runs of 13 to
    19 digits (card-like, spaces or dashes allowed) ``[CARD]`` and URLs with a query
    string ``[URL]``. ISO dates and timestamps, decimals and short numbers are kept, so
    policy reasons (p-values, metrics, cooldown ends) read unchanged.

    Args:
        text: any free text (sample values, reasons, names).

    Returns:
        The text with the personal data replaced.
    """
    parts: list[str] = []
    position = 0
    for match in _ISO_DATETIME.finditer(text):
        parts.append(_scrub_segment(text[position : match.start()]))
        parts.append(match.group())
        position = match.end()
    parts.append(_scrub_segment(text[position:]))
    return "".join(parts)


def one_line(text: str, limit: int) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["one_line", "scrub_pii"]
