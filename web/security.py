"""Response headers that every page and API answer carries."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import request

# Assets are all local, so only same-origin scripts and styles are needed;
# data: images carry the inlined preview of the uploaded photo.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def add_security_headers(response):
    """Attach nosniff, CSP, referrer and framing policies to ``response``."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    return response


def add_cache_policy(response):
    """No shared or disk cache may keep an answer to a POST (it carries the shopper's photo or file name).

    Other pages and JSON change with the index, so they are revalidated;
    images keep the max-age their route gave them.
    """
    if request.method == "POST":
        response.headers["Cache-Control"] = "no-store"
    elif "Cache-Control" not in response.headers and response.mimetype in ("text/html", "application/json"):
        response.headers["Cache-Control"] = "no-cache"
    return response


def shop_link(metadata: dict) -> str | None:
    """The product's page in the shop (``url`` or ``link`` column), only when it is a plain http(s) URL.

    Anything else (``javascript:``, ``data:``, relative paths, spaces) is
    dropped rather than linked, since styles.csv is not trusted markup.
    """
    for column in ("url", "link"):
        value = (metadata.get(column) or "").strip()
        if not value or any(ch.isspace() or ord(ch) < 32 for ch in value):
            continue
        parts = urlsplit(value)
        if parts.scheme.lower() in ("http", "https") and parts.netloc:
            return value
    return None
