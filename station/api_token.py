"""The inspection API's access token: when it is needed, where it lives, how it is checked. Qt-free.

The service (``station-cli serve``, :mod:`station.api`) listens on the loopback interface unless
told otherwise, and there anyone on the PC may use it, as they may use the station. Bound to any
other address it requires ``Authorization: Bearer <token>`` on every request but the health check.
The token is made with :mod:`secrets` (256 bits), written once to ``api-token`` in the station's
config folder, readable by its owner only (0600), and printed once, when it is made; a token file
readable by others is refused. ``--token-file FILE`` names another file (made the same way when
missing) and requires the token even on loopback. Tokens are compared in constant time.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

TOKEN_FILE = "api-token"  # in the config folder
TOKEN_BYTES = 32


class TokenError(Exception):
    """The token file cannot be used; ``str()`` says why and what to do."""


def is_loopback(host: str) -> bool:
    """True for an address only this PC can reach (127.0.0.0/8, ::1, "localhost")."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@dataclass(frozen=True)
class AccessToken:
    """The token a request must carry (``value``), where it is kept, and whether it was just made."""

    value: str
    path: Path
    created: bool = False

    def matches(self, presented: str | None) -> bool:
        """Constant-time comparison of a presented token (None or "" never matches)."""
        if not presented:
            return False
        return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), self.value.encode("utf-8"))

    def matches_header(self, authorization: str | None) -> bool:
        """Does an ``Authorization`` header carry this token as a bearer token?"""
        scheme, _, value = (authorization or "").strip().partition(" ")
        return scheme.lower() == "bearer" and self.matches(value.strip())


def _read(path: Path) -> str:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TokenError(f"The token file {path} cannot be read ({exc.strerror or exc}).") from exc
    if not stat.S_ISREG(st.st_mode):
        raise TokenError(f"The token file {path} is not a regular file.")
    if os.name == "posix" and st.st_mode & 0o077:
        raise TokenError(f"The token file {path} can be read by other users (mode {stat.S_IMODE(st.st_mode):04o}): "
                         f"run `chmod 600 {path}` or remove it to make a new token.")
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"The token file {path} cannot be read ({exc}).") from exc
    if len(value) < 16 or any(c.isspace() for c in value):
        raise TokenError(f"The token file {path} does not hold a usable token (at least 16 characters, no spaces): "
                         "remove it to make a new one.")
    return value


def _create(path: Path) -> str:
    value = secrets.token_urlsafe(TOKEN_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: never overwrite a token another process has just made
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    except FileExistsError:
        return _read(path)
    except OSError as exc:
        raise TokenError(f"The token file {path} cannot be written ({exc.strerror or exc}).") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        try:
            path.unlink()
        except OSError:
            pass
        raise TokenError(f"The token file {path} cannot be written ({exc.strerror or exc}).") from exc
    return value


def load_or_create(path: str | os.PathLike) -> AccessToken:
    """The token kept in ``path``; made (and ``created``) when the file does not exist yet."""
    p = Path(path)
    if p.exists():
        return AccessToken(_read(p), p)
    value = _create(p)
    return AccessToken(value, p, created=True)


def token_for(host: str, config_dir: str | os.PathLike, token_file: str | os.PathLike | None = None
              ) -> AccessToken | None:
    """The token the service requires when bound to ``host``: None on loopback without a
    ``token_file``; else the token of ``token_file`` or of the config folder's ``api-token``."""
    if token_file is None and is_loopback(host):
        return None
    return load_or_create(token_file if token_file is not None else Path(config_dir) / TOKEN_FILE)
