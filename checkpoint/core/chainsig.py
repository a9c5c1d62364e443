"""Signed chain heads (optional: pip install checkpoint[sign]).

A box with `[integrity] sign_key` signs its chain head with Ed25519 and puts it in its
status (`chain`: {"seq", "head", "sig"}). Unlike the hash, the signature needs a
secret only the box holds: whoever has the box's public key can check that events
1..seq of that store, as any copy holds them, are the ones the box sealed, without
trusting HQ's database. The statement signed is the canonical JSON of
{"v": SIG_VERSION, "box", "store", "seq", "head"}; `sig` is its Ed25519 signature,
base64 (standard alphabet, padded). Keys are PEM files (`openssl genpkey -algorithm
ed25519`, `openssl pkey -pubout`). cryptography is imported only here and only when
signing is used, so the box and HQ run without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from checkpoint.core.chain import canonical, is_hash, is_int

SIG_VERSION = "checkpoint/chainsig/1"

_SIGN_HINT = "signed chain heads need the cryptography package: pip install 'checkpoint[sign]'"


def head_statement(box: str, store: str, seq: int, head: str) -> bytes:
    """The bytes a box signs for its chain head (seq `seq` of `store` has hash `head`)."""
    return canonical({"v": SIG_VERSION, "box": box, "store": store, "seq": seq, "head": head})


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise RuntimeError(_SIGN_HINT) from None
    return ed25519


def load_signing_key(pem: bytes) -> Any:
    """An Ed25519 private key from PEM (unencrypted PKCS#8, as openssl genpkey writes)."""
    ed25519 = _ed25519()
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise ValueError(f"not an unencrypted PEM private key: {err}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"not an Ed25519 key but {type(key).__name__}")
    return key


def load_verify_key(pem: bytes) -> Any:
    """An Ed25519 public key from PEM (`openssl pkey -pubout`)."""
    ed25519 = _ed25519()
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError) as err:
        raise ValueError(f"not a PEM public key: {err}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 key but {type(key).__name__}")
    return key


def sign_head(key: Any, box: str, store: str, seq: int, head: str) -> dict[str, Any]:
    """The status `chain` value: {"seq", "head", "sig"} signed with `key`."""
    import base64

    sig = key.sign(head_statement(box, store, seq, head))
    return {"seq": seq, "head": head, "sig": base64.b64encode(sig).decode("ascii")}


def check_signed_head(key: Any, box: str, store: str, signed: Mapping[str, Any]) -> str | None:
    """Why a signed head does not verify under `key`, or None when it does."""
    import base64
    import binascii

    from cryptography.exceptions import InvalidSignature

    seq, head, sig = signed.get("seq"), signed.get("head"), signed.get("sig")
    if not is_int(seq) or not is_hash(head) or not isinstance(sig, str):
        return "no seq/head/sig"
    try:
        raw = base64.b64decode(sig, validate=True)
        key.verify(raw, head_statement(box, store, seq, head))
    except (InvalidSignature, binascii.Error, ValueError):
        return f"signature of seq {seq} does not verify with the box's public key"
    return None
