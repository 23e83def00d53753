"""The compiled kernels and their Python twin give the same answers on the same vectors."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from relayforge import _kernels_py

try:
    from relayforge import _native  # type: ignore[attr-defined]
except ImportError:  # built without extensions: the twin is still checked against the vectors
    _native = None

IMPLEMENTATIONS = [_kernels_py] + ([_native] if _native is not None else [])


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda m: m.IMPLEMENTATION)
def k(request):
    return request.param


def test_native_kernels_are_built_unless_disabled():
    if os.environ.get("RELAYFORGE_NO_EXTENSIONS") != "1":
        assert _native is not None, "pip install should have built relayforge._native"


def test_github_published_example(k):
    # https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    mac = k.HmacSha256(b"It's a Secret to Everybody")
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert mac.hexdigest(b"Hello, World!") == expected
    assert mac.verify(b"Hello, World!", [expected.encode()])
    assert k.parse_github_signature(b"sha256=" + expected.encode()) == expected.encode()


def test_stripe_package_signatures_verify(k):
    import stripe

    secret = "whsec_test_secret"
    body = b'{"id":"evt_1","type":"charge.succeeded"}'
    signature = stripe.WebhookSignature._compute_signature(f"1700000000.{body.decode()}", secret)
    t, t_raw, sigs = k.parse_stripe_signature(f"t=1700000000,v1={signature}".encode())
    assert (t, t_raw, sigs) == (1700000000, b"1700000000", [signature.encode()])
    assert k.HmacSha256(secret.encode()).verify(body, sigs, prefix=t_raw + b".")
    assert not k.HmacSha256(b"other").verify(body, sigs, prefix=t_raw + b".")


@pytest.mark.parametrize("key", [b"", b"k", b"x" * 64, b"y" * 65, b"z" * 500, bytes(range(256))])
@pytest.mark.parametrize("body", [b"", b"a", b"hello world" * 100, bytes(range(256)) * 40])
@pytest.mark.parametrize("prefix", [b"", b"1700000000."])
def test_hmac_matches_stdlib(k, key, body, prefix):
    expected = hmac.new(key, prefix + body, hashlib.sha256)
    mac = k.HmacSha256(key)
    assert mac.digest(body, prefix) == expected.digest()
    assert mac.hexdigest(body, prefix) == expected.hexdigest()
    assert mac.verify(body, [b"nope", expected.hexdigest().encode()], prefix)
    assert not mac.verify(body, [expected.hexdigest().upper().encode()], prefix)
    assert not mac.verify(body, [], prefix)


def test_verifier_is_reusable_across_messages(k):
    mac = k.HmacSha256(b"secret")
    for i in range(100):
        body = str(i).encode()
        assert mac.hexdigest(body) == hmac.new(b"secret", body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("data", [b"", b"abc", bytes(range(256)) * 17])
def test_sha256_hex(k, data):
    assert k.sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_verify_compares_whole_signatures_only(k):
    mac = k.HmacSha256(b"secret")
    good = mac.hexdigest(b"abc").encode()
    assert mac.verify(b"abc", [good])
    assert not mac.verify(b"abc", [good[:-1]])  # a prefix is not a match
    assert not mac.verify(b"abc", [good + b"0"])
    assert not mac.verify(b"abc", [good[:-1] + (b"0" if good[-1:] != b"0" else b"1")])


@pytest.mark.parametrize("header,expected", [
    (b"t=1,v1=aa", (1, b"1", [b"aa"])),
    (b"t=1492774577,v1=5257a8,v0=6ffbb5", (1492774577, b"1492774577", [b"5257a8"])),
    (b" t = 5 , v1 = a , v1=b ", (5, b"5", [b"a", b"b"])),
    (b"v1=a,t=9", (9, b"9", [b"a"])),
    (b"t=9,v1=a,junk,x=y", (9, b"9", [b"a"])),
])
def test_parse_stripe_signature(k, header, expected):
    assert k.parse_stripe_signature(header) == expected


@pytest.mark.parametrize("header", [
    b"", b"v1=aa", b"t=1", b"t=1,t=2,v1=aa", b"t=abc,v1=aa", b"t=,v1=aa", b"t=-1,v1=aa",
    b"t=1234567890123456789,v1=aa", b"garbage",
])
def test_parse_stripe_signature_rejects(k, header):
    with pytest.raises(ValueError):
        k.parse_stripe_signature(header)


@pytest.mark.parametrize("header,expected", [
    (b"sha256=abc", b"abc"), (b"sha256=", b""), (b"sha1=abc", None), (b"SHA256=abc", None),
    (b"", None), (b"sha256", None),
])
def test_parse_github_signature(k, header, expected):
    assert k.parse_github_signature(header) == expected


def test_kernels_module_reports_its_choice():
    from relayforge import kernels

    expected = "python" if os.environ.get("RELAYFORGE_NO_EXTENSIONS") == "1" or _native is None \
        else "native"
    assert kernels.IMPLEMENTATION == expected


# Published vectors: RFC 2202 (HMAC-SHA1) and RFC 4231 (HMAC-SHA-256/512), keys and data as
# the RFCs give them, including a key longer than the block (hashed first).
RFC_VECTORS = [
    ("sha1", b"\x0b" * 20, b"Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),
    ("sha1", b"Jefe", b"what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    ("sha1", b"\xaa" * 80, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "aa4ae5e15272d00e95705637ce8a3b55ed402112"),
    ("sha256", b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    ("sha512", b"\x0b" * 20, b"Hi There",
     "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
     "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"),
    ("sha512", b"Jefe", b"what do ya want for nothing?",
     "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
     "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"),
    ("sha512", b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
     "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598"),
]


@pytest.mark.parametrize(("algorithm", "key", "data", "expected"), RFC_VECTORS)
def test_generic_hmac_matches_the_rfc_vectors(k, algorithm, key, data, expected):
    import base64

    mac = k.Hmac(algorithm, key)
    assert mac.hexdigest(data) == expected
    assert mac.digest(data) == bytes.fromhex(expected)
    b64 = base64.b64encode(bytes.fromhex(expected)).decode()
    assert mac.b64digest(data) == b64
    assert mac.verify(data, [b"nope", expected.encode()])
    assert mac.verify(data, [b64.encode()], encoding="base64")
    assert not mac.verify(data, [expected.upper().encode()])  # lowercase hex only
    assert not mac.verify(data + b"!", [expected.encode()])
    # a prefix is hashed in place: the same as prefix + body
    assert mac.hexdigest(data[4:], data[:4]) == expected


def test_generic_hmac_refuses_other_algorithms(k):
    with pytest.raises(ValueError):
        k.Hmac("md5", b"key")
    with pytest.raises(ValueError):
        k.Hmac("sha256", b"key").verify(b"x", [], encoding="base32")
