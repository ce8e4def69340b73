"""Checking a password against an htpasswd hash, as nginx's ``ngx_crypt`` does.

nginx (src/core/ngx_crypt.c) knows three schemes itself -- ``$apr1$`` (Apache's MD5
variant), ``{PLAIN}``, ``{SHA}`` and ``{SSHA}`` -- and hands every other hash to the
system's ``crypt()``, which on Debian is libxcrypt's: ``$1$`` MD5, ``$5$`` SHA-256,
``$6$`` SHA-512, ``$y$`` yescrypt, ``$2b$`` bcrypt and the old DES.  The same split is
made here, ``crypt()`` reached through ctypes.  The final comparison takes constant time.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import hashlib
import hmac

__all__ = ["apr1", "check_password", "system_crypt"]

_ITOA64 = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _to64(value: int, count: int) -> bytes:
    out = bytearray()
    for _ in range(count):
        out.append(_ITOA64[value & 0x3F])
        value >>= 6
    return bytes(out)


def apr1(password: bytes, setting: bytes) -> bytes:
    """``$apr1$SALT$HASH`` (ngx_crypt_apr1): MD5 crypt with Apache's magic string; the
    salt is what follows ``$apr1$`` up to a ``$``, at most 8 bytes."""
    magic = b"$apr1$"
    salt = setting[len(magic) :].split(b"$", 1)[0][:8]
    ctx = hashlib.md5(password + magic + salt)
    final = hashlib.md5(password + salt + password).digest()
    left = len(password)
    while left > 0:
        ctx.update(final[: min(16, left)])
        left -= 16
    bits = len(password)
    while bits:
        ctx.update(b"\0" if bits & 1 else password[:1])
        bits >>= 1
    final = ctx.digest()
    for i in range(1000):
        step = hashlib.md5(password if i & 1 else final)
        if i % 3:
            step.update(salt)
        if i % 7:
            step.update(password)
        step.update(final if i & 1 else password)
        final = step.digest()
    f = final
    encoded = b"".join(
        [
            _to64((f[0] << 16) | (f[6] << 8) | f[12], 4),
            _to64((f[1] << 16) | (f[7] << 8) | f[13], 4),
            _to64((f[2] << 16) | (f[8] << 8) | f[14], 4),
            _to64((f[3] << 16) | (f[9] << 8) | f[15], 4),
            _to64((f[4] << 16) | (f[10] << 8) | f[5], 4),
            _to64(f[11], 2),
        ]
    )
    return magic + salt + b"$" + encoded


def _sha(password: bytes) -> bytes:
    return b"{SHA}" + base64.b64encode(hashlib.sha1(password).digest())


def _ssha(password: bytes, setting: bytes) -> bytes:
    """``{SSHA}`` base64(SHA-1(password + salt) + salt) (ngx_crypt_ssha)."""
    try:
        decoded = base64.b64decode(setting[6:], validate=True)
    except (binascii.Error, ValueError):
        return b""
    salt = decoded[20:]
    return b"{SSHA}" + base64.b64encode(hashlib.sha1(password + salt).digest() + salt)


class _Crypt:
    """The system's ``crypt(3)``, loaded when first needed."""

    def __init__(self) -> None:
        self.function: ctypes._NamedFuncPointer | None = None

    def __call__(self, password: bytes, setting: bytes) -> bytes:
        function = self.function
        if function is None:
            name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
            function = ctypes.CDLL(name).crypt
            function.restype = ctypes.c_char_p
            function.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
            self.function = function
        if b"\0" in password or b"\0" in setting:
            return b""
        result = function(password, setting)
        # libxcrypt answers an unknown or malformed setting with "*0"/"*1" (or NULL)
        if not isinstance(result, bytes) or result.startswith(b"*"):
            return b""
        return result


system_crypt = _Crypt()


def check_password(password: bytes, stored: str) -> bool:
    """Whether ``password`` matches the hash ``stored`` from an htpasswd file."""
    setting = stored.encode("utf-8", "surrogateescape")
    if setting.startswith(b"$apr1$"):
        computed = apr1(password, setting)
    elif setting.startswith(b"{PLAIN}"):
        computed = b"{PLAIN}" + password
    elif setting.startswith(b"{SSHA}"):
        computed = _ssha(password, setting)
    elif setting.startswith(b"{SHA}"):
        computed = _sha(password)
    else:
        computed = system_crypt(password, setting)
    return bool(computed) and hmac.compare_digest(computed, setting)
