"""The site's signing secret: one value shared by every worker of an installation.

``FASHION_SECRET_KEY`` sets it (needed when several hosts serve one site).
Otherwise the first worker to start writes a random one to ``secret_key`` in
the index folder (mode 0600), and every later worker, and every restart,
reads the same file: a page signed by one worker is accepted by all.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

SECRET_FILE = "secret_key"
MIN_SECRET_CHARS = 32


class SecretError(RuntimeError):
    """The secret file exists but cannot be used."""


def _read(path: Path) -> bytes:
    value = path.read_bytes().strip()
    if len(value) < MIN_SECRET_CHARS:
        raise SecretError(
            f"{path} holds {len(value)} characters; a signing secret needs at least {MIN_SECRET_CHARS}. "
            "Delete it to have a new one made, or set FASHION_SECRET_KEY."
        )
    return value


def _create(path: Path) -> None:
    # written in full under a private name, then linked into place: a worker
    # starting at the same moment sees either no file or the whole secret
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
        log.info("Created a signing secret in %s", path)
    except FileExistsError:
        pass  # another worker won the race; its secret is the one
    finally:
        tmp.unlink(missing_ok=True)


def load_secret(configured: str, index_dir: Path) -> bytes:
    """The signing secret: ``configured`` when set, else the installation's file (made on first use)."""
    if configured:
        return configured.encode("utf-8")
    path = Path(index_dir) / SECRET_FILE
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _create(path)
        return _read(path)
    except OSError as exc:
        raise SecretError(
            f"Cannot make or read the signing secret {path} ({exc.strerror or exc}). "
            "Make the index folder writable by the site, or set FASHION_SECRET_KEY."
        ) from None
