# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled kernels of the webhook hot path, linked against OpenSSL's libcrypto.

Same API as relayforge/_kernels_py.py (the pure-Python twin); tests/unit/test_kernels.py runs the
same vectors through both. HMAC keys are expanded once per secret: a verifier keeps the SHA-256
states after the ipad/opad block, so each request costs two state copies and the body hash.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memset

cdef extern from *:
    """
    #define OPENSSL_SUPPRESS_DEPRECATED 1
    """

cdef extern from "openssl/sha.h" nogil:
    ctypedef struct SHA256_CTX:
        pass
    int SHA256_Init(SHA256_CTX *c)
    int SHA256_Update(SHA256_CTX *c, const void *data, size_t length)
    int SHA256_Final(unsigned char *md, SHA256_CTX *c)
    unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md)

cdef extern from "openssl/crypto.h" nogil:
    int CRYPTO_memcmp(const void *a, const void *b, size_t length)

cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_MD:
        pass
    ctypedef struct EVP_MD_CTX:
        pass
    ctypedef struct ENGINE:
        pass
    const EVP_MD *EVP_get_digestbyname(const char *name)
    int EVP_MD_size(const EVP_MD *md)
    int EVP_MD_block_size(const EVP_MD *md)
    EVP_MD_CTX *EVP_MD_CTX_new()
    void EVP_MD_CTX_free(EVP_MD_CTX *ctx)
    int EVP_MD_CTX_copy_ex(EVP_MD_CTX *out, const EVP_MD_CTX *inp)
    int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *type, ENGINE *impl)
    int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t cnt)
    int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s)
    int EVP_Digest(const void *data, size_t count, unsigned char *md, unsigned int *size,
                   const EVP_MD *type, ENGINE *impl)
    int EVP_EncodeBlock(unsigned char *t, const unsigned char *f, int n)

cdef enum:
    BLOCK = 64
    DIGEST = 32
    HEXLEN = 64

cdef const char *HEXCHARS = b"0123456789abcdef"


cdef inline void _hex(const unsigned char *src, Py_ssize_t n, char *dst) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[2 * i] = HEXCHARS[src[i] >> 4]
        dst[2 * i + 1] = HEXCHARS[src[i] & 15]


cdef class HmacSha256:
    """HMAC-SHA256 under one key, with the key schedule computed once."""

    cdef SHA256_CTX _inner
    cdef SHA256_CTX _outer

    def __cinit__(self, bytes key not None):
        cdef unsigned char block[BLOCK]
        cdef unsigned char pad[BLOCK]
        cdef Py_ssize_t n = PyBytes_GET_SIZE(key)
        cdef const unsigned char *k = <const unsigned char *>PyBytes_AS_STRING(key)
        cdef int i
        memset(block, 0, BLOCK)
        if n > BLOCK:
            SHA256(k, n, block)
        else:
            for i in range(n):
                block[i] = k[i]
        for i in range(BLOCK):
            pad[i] = block[i] ^ 0x36
        SHA256_Init(&self._inner)
        SHA256_Update(&self._inner, pad, BLOCK)
        for i in range(BLOCK):
            pad[i] = block[i] ^ 0x5C
        SHA256_Init(&self._outer)
        SHA256_Update(&self._outer, pad, BLOCK)

    cdef void _digest(self, bytes prefix, bytes body, unsigned char *out) noexcept:
        cdef SHA256_CTX ctx = self._inner
        cdef unsigned char inner[DIGEST]
        if prefix is not None and PyBytes_GET_SIZE(prefix):
            SHA256_Update(&ctx, PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix))
        SHA256_Update(&ctx, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))
        SHA256_Final(inner, &ctx)
        ctx = self._outer
        SHA256_Update(&ctx, inner, DIGEST)
        SHA256_Final(out, &ctx)

    def digest(self, bytes body not None, bytes prefix=b""):
        """HMAC over prefix + body (the prefix is hashed in place, never concatenated)."""
        cdef unsigned char out[DIGEST]
        self._digest(prefix, body, out)
        return PyBytes_FromStringAndSize(<char *>out, DIGEST)

    def hexdigest(self, bytes body not None, bytes prefix=b""):
        cdef unsigned char out[DIGEST]
        cdef char hexout[HEXLEN]
        self._digest(prefix, body, out)
        _hex(out, DIGEST, hexout)
        return PyUnicode_DecodeASCII(hexout, HEXLEN, NULL)

    def verify(self, bytes body not None, signatures, bytes prefix=b""):
        """True when any of `signatures` (lowercase hex bytes) is the HMAC of prefix + body.

        Every candidate is compared in constant time; the digest is computed once.
        """
        cdef unsigned char out[DIGEST]
        cdef char hexout[HEXLEN]
        cdef bint ok = False
        cdef bytes sig
        self._digest(prefix, body, out)
        _hex(out, DIGEST, hexout)
        for sig in signatures:
            if PyBytes_GET_SIZE(sig) == HEXLEN and CRYPTO_memcmp(PyBytes_AS_STRING(sig), hexout, HEXLEN) == 0:
                ok = True
        return ok


cdef enum:
    MAX_BLOCK = 128  # SHA-512's
    MAX_DIGEST = 64
    MAX_ENCODED = 132  # hex of 64 bytes is 128; base64 is 88, plus NUL


cdef class Hmac:
    """HMAC under one key with SHA-1, SHA-256 or SHA-512 (tenant-defined sources), the key
    schedule computed once: each call copies two digest states, as HmacSha256 does."""

    cdef EVP_MD_CTX *_inner
    cdef EVP_MD_CTX *_outer
    cdef EVP_MD_CTX *_scratch
    cdef int _size

    def __cinit__(self, str algorithm not None, bytes key not None):
        self._inner = EVP_MD_CTX_new()
        self._outer = EVP_MD_CTX_new()
        self._scratch = EVP_MD_CTX_new()
        if algorithm not in ("sha1", "sha256", "sha512"):
            raise ValueError("algorithm must be sha1, sha256 or sha512")
        cdef bytes name = algorithm.encode()
        cdef const EVP_MD *md = EVP_get_digestbyname(name)
        if md == NULL or self._inner == NULL or self._outer == NULL or self._scratch == NULL:
            raise MemoryError("OpenSSL digest unavailable")
        cdef int block = EVP_MD_block_size(md)
        cdef unsigned char keyblock[MAX_BLOCK]
        cdef unsigned char pad[MAX_BLOCK]
        cdef Py_ssize_t n = PyBytes_GET_SIZE(key)
        cdef const unsigned char *k = <const unsigned char *>PyBytes_AS_STRING(key)
        cdef unsigned int hashed = 0
        cdef int i
        self._size = EVP_MD_size(md)
        memset(keyblock, 0, MAX_BLOCK)
        if n > block:
            EVP_Digest(k, n, keyblock, &hashed, md, NULL)
        else:
            for i in range(n):
                keyblock[i] = k[i]
        for i in range(block):
            pad[i] = keyblock[i] ^ 0x36
        EVP_DigestInit_ex(self._inner, md, NULL)
        EVP_DigestUpdate(self._inner, pad, block)
        for i in range(block):
            pad[i] = keyblock[i] ^ 0x5C
        EVP_DigestInit_ex(self._outer, md, NULL)
        EVP_DigestUpdate(self._outer, pad, block)

    def __dealloc__(self):
        EVP_MD_CTX_free(self._inner)
        EVP_MD_CTX_free(self._outer)
        EVP_MD_CTX_free(self._scratch)

    cdef int _digest(self, bytes prefix, bytes body, unsigned char *out) except -1:
        cdef unsigned char inner[MAX_DIGEST]
        cdef unsigned int size = 0
        EVP_MD_CTX_copy_ex(self._scratch, self._inner)
        if prefix is not None and PyBytes_GET_SIZE(prefix):
            EVP_DigestUpdate(self._scratch, PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix))
        EVP_DigestUpdate(self._scratch, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))
        EVP_DigestFinal_ex(self._scratch, inner, &size)
        EVP_MD_CTX_copy_ex(self._scratch, self._outer)
        EVP_DigestUpdate(self._scratch, inner, size)
        EVP_DigestFinal_ex(self._scratch, out, &size)
        return 0

    cdef Py_ssize_t _encoded(self, bytes prefix, bytes body, bint base64, char *out) except -1:
        cdef unsigned char raw[MAX_DIGEST]
        self._digest(prefix, body, raw)
        if base64:
            return EVP_EncodeBlock(<unsigned char *>out, raw, self._size)
        _hex(raw, self._size, out)
        return 2 * self._size

    def digest(self, bytes body not None, bytes prefix=b""):
        cdef unsigned char out[MAX_DIGEST]
        self._digest(prefix, body, out)
        return PyBytes_FromStringAndSize(<char *>out, self._size)

    def hexdigest(self, bytes body not None, bytes prefix=b""):
        cdef char out[MAX_ENCODED]
        cdef Py_ssize_t n = self._encoded(prefix, body, False, out)
        return PyUnicode_DecodeASCII(out, n, NULL)

    def b64digest(self, bytes body not None, bytes prefix=b""):
        cdef char out[MAX_ENCODED]
        cdef Py_ssize_t n = self._encoded(prefix, body, True, out)
        return PyUnicode_DecodeASCII(out, n, NULL)

    def verify(self, bytes body not None, signatures, bytes prefix=b"", str encoding="hex"):
        """True when any of `signatures` (bytes: lowercase hex, or standard base64) is the HMAC
        of prefix + body; every candidate compared in constant time, the MAC computed once."""
        cdef char out[MAX_ENCODED]
        cdef Py_ssize_t n
        cdef bint ok = False
        cdef bytes sig
        if encoding not in ("hex", "base64"):
            raise ValueError("encoding must be hex or base64")
        n = self._encoded(prefix, body, encoding == "base64", out)
        for sig in signatures:
            if PyBytes_GET_SIZE(sig) == n and CRYPTO_memcmp(PyBytes_AS_STRING(sig), out, n) == 0:
                ok = True
        return ok


def sha256_hex(bytes data not None):
    cdef unsigned char out[DIGEST]
    cdef char hexout[HEXLEN]
    cdef SHA256_CTX ctx
    SHA256_Init(&ctx)
    SHA256_Update(&ctx, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    SHA256_Final(out, &ctx)
    _hex(out, DIGEST, hexout)
    return PyUnicode_DecodeASCII(hexout, HEXLEN, NULL)


cdef inline bint _is_space(char c) noexcept nogil:
    return c == b' ' or c == b'\t'


def parse_stripe_signature(bytes header not None):
    """Parse `t=<unix>,v1=<hex>[,v1=...]` into (t, t_raw, [v1...]).

    Raises ValueError on a missing or repeated `t`, a non-numeric `t`, or no `v1`. Other schemes
    (v0, future ones) are skipped, as Stripe's own libraries do.
    """
    cdef const char *s = PyBytes_AS_STRING(header)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(header)
    cdef Py_ssize_t i = 0, start, end, eq, ks, ke, vs, ve, j
    cdef long long t = 0
    cdef bint have_t = False
    cdef bytes t_raw = None
    signatures = []
    while i <= n:
        start = i
        while i < n and s[i] != b',':
            i += 1
        end = i
        i += 1
        eq = start
        while eq < end and s[eq] != b'=':
            eq += 1
        if eq == end:
            continue
        ks = start
        ke = eq
        while ks < ke and _is_space(s[ks]):
            ks += 1
        while ke > ks and _is_space(s[ke - 1]):
            ke -= 1
        vs = eq + 1
        ve = end
        while vs < ve and _is_space(s[vs]):
            vs += 1
        while ve > vs and _is_space(s[ve - 1]):
            ve -= 1
        if ke - ks == 1 and s[ks] == b't':
            if have_t:
                raise ValueError("more than one t= in Stripe-Signature")
            if ve == vs or ve - vs > 18:
                raise ValueError("t= is not a unix timestamp")
            for j in range(vs, ve):
                if s[j] < b'0' or s[j] > b'9':
                    raise ValueError("t= is not a unix timestamp")
                t = t * 10 + (s[j] - 48)
            have_t = True
            t_raw = PyBytes_FromStringAndSize(s + vs, ve - vs)
        elif ke - ks == 2 and s[ks] == b'v' and s[ks + 1] == b'1':
            signatures.append(PyBytes_FromStringAndSize(s + vs, ve - vs))
    if not have_t:
        raise ValueError("no t= in Stripe-Signature")
    if not signatures:
        raise ValueError("no v1= signature in Stripe-Signature")
    return t, t_raw, signatures


def parse_github_signature(bytes header not None):
    """The hex of `sha256=<hex>`, or None when the header has another form."""
    cdef const char *s = PyBytes_AS_STRING(header)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(header)
    if n < 7 or s[0] != b's' or s[1] != b'h' or s[2] != b'a' or s[3] != b'2' or s[4] != b'5' \
            or s[5] != b'6' or s[6] != b'=':
        return None
    return PyBytes_FromStringAndSize(s + 7, n - 7)


IMPLEMENTATION = "native"
