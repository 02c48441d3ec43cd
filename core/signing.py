"""Optional Ed25519 signatures of recipes: "this recipe is the one our engineer released".

A recipe's content hash (``core.recipe``) covers the manifest and, through its per-file sha256
list, every tensor, graph and image file; but anyone can recompute it after an edit. A signature
binds that hash to a private key: ``sign_recipe`` writes ``signature.ed25519`` beside the manifest
(outside the content hash, so signing does not change the recipe's identity), and a station that
accepts only signed recipes (``Recipe.load(path, trusted_keys)``) refuses a recipe that is
unsigned, signed by a key it does not trust, or changed after it was signed.

    station-cli keygen ~/keys/line1                      # line1 (private, 0600) and line1.pub
    station-cli sign-recipe recipes/bracket/v0003 --key ~/keys/line1
    # copy line1.pub into the station's trusted-keys folder, turn on require_signed_recipes

The signed message is ``MESSAGE_PREFIX + content_hash``; the signature file is JSON (key id, content
hash, base64 signature) so a refusal can say what is wrong. Keys are PEM files: PKCS#8 private
keys (unencrypted, written 0600; keep them off the stations) and SubjectPublicKeyInfo public keys.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_bytes_atomic
from .recipe import SIGNATURE, Recipe, RecipeError

log = logging.getLogger(__name__)

ALGORITHM = "ed25519"
FORMAT = 1
MESSAGE_PREFIX = b"inspection-station recipe signature 1\n"
PUBLIC_SUFFIX = ".pub"
MAX_SIGNATURE_BYTES = 64 << 10
MAX_KEY_BYTES = 64 << 10


class SigningError(RecipeError):
    """A key cannot be made or read, or a recipe cannot be signed; ``str()`` says why."""


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a station trusts, by key id, and where they came from (for messages)."""

    keys: Mapping[str, Any] = field(default_factory=dict)  # key id -> Ed25519PublicKey
    source: str = "the trusted keys given"

    def __len__(self) -> int:
        return len(self.keys)


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - a dependency of the station
        raise SigningError("Recipe signatures need the 'cryptography' package, which is not installed.") from exc
    return serialization, ed25519


def key_id(public_key) -> str:
    """A short, stable name of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_path(private_key_path: str | os.PathLike) -> Path:
    p = Path(private_key_path)
    return p.with_name(p.name + PUBLIC_SUFFIX)


def generate_key(path: str | os.PathLike) -> tuple[Path, Path]:
    """A new key pair: the private key at ``path`` (mode 0600), the public key at ``path + '.pub'``.
    Never overwrites a file. Returns (private key path, public key path)."""
    serialization, ed25519 = _crypto()
    path = Path(path)
    pub_path = public_key_path(path)
    for p in (path, pub_path):
        if p.exists():
            raise SigningError(f"{p} already exists; choose another name (a key is never overwritten).")
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    except FileExistsError as exc:
        raise SigningError(f"{path} already exists; choose another name (a key is never overwritten).") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    write_bytes_atomic(pub_path, public_pem)
    return path, pub_path


def _read_key_file(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_KEY_BYTES:
            raise SigningError(f"{path} is not a key file (it is too large).")
        return path.read_bytes()
    except OSError as exc:
        raise SigningError(f"The key file {path} cannot be read ({exc.strerror or exc}).") from exc


def load_private_key(path: str | os.PathLike):
    serialization, ed25519 = _crypto()
    path = Path(path)
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{path} is not an unencrypted PEM private key ({exc}).") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningError(f"{path} is not an Ed25519 private key (make one with 'station-cli keygen').")
    return key


def load_public_key(path: str | os.PathLike):
    serialization, ed25519 = _crypto()
    path = Path(path)
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{path} is not a PEM public key ({exc}).") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SigningError(f"{path} is not an Ed25519 public key.")
    return key


def load_trusted_keys(source) -> TrustedKeys:
    """Trusted public keys from a folder (every ``*.pub`` file in it), one key file, public key
    objects, or an iterable of those. A key file that cannot be read is logged and left out
    (it trusts nothing); a missing folder trusts nothing."""
    if isinstance(source, TrustedKeys):
        return source
    if isinstance(source, Mapping):  # key id -> public key, as TrustedKeys.keys holds them
        return TrustedKeys(dict(source))
    _, ed25519 = _crypto()
    keys: dict[str, Any] = {}
    items = [source] if isinstance(source, (str, os.PathLike)) or not isinstance(source, Iterable) else list(source)
    names = []
    for item in items:
        if isinstance(item, ed25519.Ed25519PublicKey):
            keys[key_id(item)] = item
            continue
        p = Path(item)
        names.append(str(p))
        files = sorted(p.glob(f"*{PUBLIC_SUFFIX}")) if p.is_dir() else [p] if p.exists() else []
        for f in files:
            try:
                key = load_public_key(f)
            except SigningError as exc:
                log.warning("Trusted key %s left out: %s", f, exc)
                continue
            keys[key_id(key)] = key
    source_words = f"the trusted keys in {', '.join(names)}" if names else "the trusted keys given"
    return TrustedKeys(keys, source_words)


def _message(content_hash: str) -> bytes:
    return MESSAGE_PREFIX + content_hash.encode("ascii")


def sign_recipe(folder: str | os.PathLike, private_key_path: str | os.PathLike) -> Path:
    """Check the recipe (every file against its hash, the manifest's fields) and sign its content
    hash with the private key; writes ``signature.ed25519`` in the folder and returns its path."""
    folder = Path(folder)
    recipe = Recipe.load(folder)  # a recipe that does not load is never signed
    private = load_private_key(private_key_path)
    content_hash = recipe.manifest["content_hash"]
    doc = {
        "format": FORMAT,
        "algorithm": ALGORITHM,
        "key_id": key_id(private.public_key()),
        "product": recipe.product,
        "version": recipe.version,
        "content_hash": content_hash,
        "signature": base64.b64encode(private.sign(_message(content_hash))).decode("ascii"),
    }
    return write_bytes_atomic(folder / SIGNATURE, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def check_signature(folder: str | os.PathLike, content_hash: str, trusted) -> str:
    """The id of the trusted key that signed ``content_hash`` in ``folder``'s signature file; raises
    ``RecipeError`` with the reason otherwise. ``Recipe.load`` calls it after checking every file's
    hash against the manifest (so the content hash stands for the whole recipe)."""
    from .recipe_schema import parse_json

    _crypto()  # a plain message if cryptography is missing
    from cryptography.exceptions import InvalidSignature

    trusted = load_trusted_keys(trusted)
    folder = Path(folder)
    sig_path = folder / SIGNATURE
    refuse = f"Recipe {folder}"
    if not sig_path.is_file():
        raise RecipeError(f"{refuse} is not signed, and this station accepts only recipes signed by one of "
                          f"{trusted.source}. Sign it with 'station-cli sign-recipe'.")
    try:
        if sig_path.stat().st_size > MAX_SIGNATURE_BYTES:
            raise RecipeError(f"{refuse}: its signature file is damaged (too large).")
        doc = parse_json(sig_path.read_text(encoding="utf-8"), folder, "signature file")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{refuse}: its signature file cannot be read ({exc}).") from exc
    if not isinstance(doc, dict) or doc.get("algorithm") != ALGORITHM or not isinstance(doc.get("key_id"), str):
        raise RecipeError(f"{refuse}: its signature file is damaged (not an {ALGORITHM} signature).")
    try:
        signature = base64.b64decode(str(doc.get("signature", "")), validate=True)
    except ValueError:
        signature = b""
    if len(signature) != 64:
        raise RecipeError(f"{refuse}: its signature file is damaged (the signature is not 64 bytes).")
    if doc.get("content_hash") != content_hash:
        raise RecipeError(f"{refuse} was changed after it was signed: its signature is for other content.")
    kid = doc["key_id"]
    key = trusted.keys.get(kid)
    if key is None:
        raise RecipeError(f"{refuse} is signed by key {kid[:16]!r}, which is not among {trusted.source}.")
    try:
        key.verify(signature, _message(content_hash))
    except InvalidSignature:
        raise RecipeError(f"{refuse}: its signature does not verify with key {kid!r} (forged or damaged).") from None
    return kid


def verify_recipe(folder: str | os.PathLike, trusted_public_keys) -> str:
    """Check a recipe completely (hashes, manifest, signature by one of ``trusted_public_keys``);
    returns the signing key's id, raises ``RecipeError`` otherwise."""
    recipe = Recipe.load(folder, load_trusted_keys(trusted_public_keys))
    assert recipe.signed_by is not None
    return recipe.signed_by
