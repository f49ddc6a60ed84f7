#!/usr/bin/env python3
"""Make (or check) the key fixtures of tests/fixtures/.

Two kinds of fixtures, described in tests/fixtures/README.md:

* Published test vectors of go-libp2p and rust-libp2p, copied here from their
  sources (text) into key files (binary). Their PeerIds are recomputed here,
  independently of any libp2p code, and must equal the published ones.
* Keys written the way the Python Hypertensor mesh (a hivemind fork) and
  py-libp2p write them, made with the `cryptography` package exactly as
  `hivemind/utils/crypto.py` and `subnet/cli/crypto/keygen.py` do, with their
  PeerIds computed here and signatures made here (RSA-PSS with
  `padding.PSS.MAX_LENGTH`, hivemind's padding, and with a 32-byte salt).

Usage:
    pip install cryptography
    python3 scripts/make_key_fixtures.py          # (re)write all fixtures;
                                                  # new random Python keys
    python3 scripts/make_key_fixtures.py --check  # verify the committed ones

Only `cryptography` is needed: the protobuf messages (two fields) and
base58btc are encoded by hand below.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import pathlib
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"

# libp2p KeyType enum (peer-ids spec).
RSA, ED25519, SECP256K1, ECDSA = 0, 1, 2, 3

MESSAGE = b"mesh interop fixture: signed with the Python hivemind/Hypertensor key code\n"

# --- Published vectors ------------------------------------------------------

# go-libp2p, p2p/http/auth/auth_test.go, TestWalkthroughInSpec (the walkthrough
# of libp2p/specs http/peer-id-auth.md): the client key and its PeerId, and the
# "zero key" (Ed25519 seed of 32 zero bytes) and its PeerId, with the
# deterministic signatures over the messages of the walkthrough.
GO_ED25519_CLIENT_HEX = (
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"
    "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
GO_ED25519_CLIENT_PEER_ID = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
GO_ED25519_CLIENT_MESSAGE = (
    b"libp2p-PeerID=challenge-client=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    b'\x16hostname="example.com"'
)
GO_ED25519_CLIENT_SIG = (
    "F5OBYbbMXoIVJNWrW0UANi7rrbj4GCB6kcEceQjajLTMvC-_jpBF9MFlxiaNYXOEiPQqeo_S56YUSNinwl0ZCQ=="
)
GO_ED25519_ZERO_HEX = (
    "080112400000000000000000000000000000000000000000000000000000000000000000"
    "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
)
GO_ED25519_ZERO_PEER_ID = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
GO_ED25519_ZERO_MESSAGE = (
    b"libp2p-PeerID=challenge-server=BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB="
    b";client=12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
    b'\x16hostname="example.com"'
)
GO_ED25519_ZERO_SIG = (
    "btLFqW200aDTQqpkKetJJje7V-iDknXygFqPsfiegNsboXeYDiQ6Rqcpezz1wfr8j9h83QkN9z78cAWzKzV_AQ=="
)

# go-libp2p, core/peer/peer_test.go: `skManBytes` (base64 of the protobuf
# PrivateKey, RSA-2048, PKCS#1 data) and its PeerId `hpkpMan`.
GO_RSA2048_B64 = """
CAASqAkwggSkAgEAAoIBAQC3hjPtPli71gFNzGJ6rUhYdb65BDwW7IrniEaZKi6z
tW4Iz0MouEJY8GPG1iQfqZKp5w9H2ENh4I1bk2dsezrJ7Nneg4Eqd78CmeHTAgaP
3PKsxohdMo/TOFNxwl8SkEF8FyVbio2TCoijYNHUuprZuq7MPEAJYr3Z1eEkM/xR
pMp3YI9S2SYsZQxbmmQ0/GfHOEvYajdow1qttreVTQkvmCppKtNLEU5InpX/W5fe
aQCj0pd7l74daZgM2WWz3juEUCVG7tdRUPg7ix1TYosbN96CKC3q2MJxe/wJ9gR5
Jvjnaaaoon+mci5vrKzxdKBDmZ/ZbLiHDfVljMkbdOQLAgMBAAECggEAEULaF3JJ
vkD+lmamzIsHxuosKhKv5CgTWHuEyFsjUVu7IbD8zBOoidzyRX1WoHO+i6Rj14oL
rGUGZpqSm61rdhqE01zjBS+GE6SNjN8f5uANIxr5MGrVBDTEBGsXrhNLVXSH2vhJ
II9ZEqTEl5GFhvz7+9Ge5EMZQCfRqSoKjVMdrs+Rueuusr9p0wNg9PH1myA+cXGt
iNZA17Rj2IiWVZLDgYNo4DVQUt4mFb+wTJW4NSspGKaFebpn0hf4z21laoGoJqTC
cNETJw+QwQ0uDaRoYotTLT2/55e8XBFTdcTg5cmbZoKgMyGqZEHfRyD9reVDAZlM
EZwKtrm41kz94QKBgQDmPp5zVtFXQNONmje1NE0IjCaUKcqURXk4ZiILztfT9XLC
OXAUCs3TCq21jirCkZZ6gLfo12Wx0xJYmsKlaUOGNTa8FI5Xa7OyheYKixUvV6FW
J95P/sNuWscTjh7oZHgZk/L3yKrNzNBz7awComwV6qciXW7EP1uACHf5fS/RdQKB
gQDMDa38W9OeegRDrhCeYGsniJK7btOCzhNooruQKPPXxk+O4dyJm7VBbC/3Ch55
a83W66T4k0Q7ysLVRT5Vqd5z3AM0sEM3ZoxUKCinG3NwPxVeXcoLasyEiq1vOFK6
GqZKCMThCj7ZpbkWy0DPJagnYfZGC62lammuj+XQx7mvfwKBgQCTKhka/bXmgD/3
9UeAIcLPIM2TzDZ4mQNHIjjGtVnMV8kXDaFung06xEuNjSYVoPq+qEFkqTCN/axv
R9P76BFJ2f93LehhRizggacsvAM5dFhh+i+lj+AYTBuMiz2EKpt9NcyJxhAuZKgk
QRi9wlU1mPtlArVG6HwylLcil3qV9QKBgQDJHtaU/KEY+2TGnIMuxxP2lEsjyLla
nOlOYc8C6Qpma8UwrHelfj5p7Eteb6/Xt6Tbp8kjZGuFj3T3plcpMdPbWEgkn3Kw
4TeBH0/qXUkrolHagBDLrglEvjbxf48ydV/fasM6l9GYzhofWFhZk+EoaArHwWz2
tGrTrmsynBjt2wKBgErdYe+zZ2Wo+wXQGAoZi4pfcwiw4a97Kdh0dx+WZz7acHms
h+V20VRmEHm5h8WnJ/Wv5uK94t6NY17wzjQ7y2BN5mY5cA2cZAcpeqtv/N06tH4S
cn1UEuRB8VpwkjaPUNZhqtYK40qff2OTdJy8taFtQiN7fz9euWTC78zjph2s
"""
GO_RSA2048_PEER_ID = "QmcJeseojbPW9hSejUM1sQ1a2QmbrryPK4Z8pWbRUPaYEn"

# --- Encodings ----------------------------------------------------------------

B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58_ALPHABET[r] + out
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + out


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key_message(key_type: int, data: bytes) -> bytes:
    """libp2p's PublicKey / PrivateKey (proto2, both fields required, so
    Type = RSA = 0 is written too): field 1 varint, field 2 bytes."""
    return b"\x08" + varint(key_type) + b"\x12" + varint(len(data)) + data


def parse_key_message(raw: bytes) -> tuple[int, bytes]:
    """The inverse of key_message, for the canonical encoding only."""
    assert raw[0] == 0x08, "field 1 (Type) first"
    pos, key_type = _read_varint(raw, 1)
    assert raw[pos] == 0x12, "field 2 (Data) second"
    pos, length = _read_varint(raw, pos + 1)
    data = raw[pos : pos + length]
    assert len(data) == length and pos + length == len(raw), "nothing after Data"
    return key_type, data


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    n, shift = 0, 0
    while True:
        b = raw[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return pos, n


def peer_id(public_key_message: bytes) -> str:
    """Identity multihash when the PublicKey message is at most 42 bytes,
    else sha2-256 multihash; base58btc (peer-ids spec)."""
    if len(public_key_message) <= 42:
        multihash = b"\x00" + varint(len(public_key_message)) + public_key_message
    else:
        multihash = b"\x12\x20" + hashlib.sha256(public_key_message).digest()
    return b58encode(multihash)


def rsa_public_message(private_key: rsa.RSAPrivateKey) -> bytes:
    spki = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key_message(RSA, spki)


def ed25519_public_message(private_key: ed25519.Ed25519PrivateKey) -> bytes:
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key_message(ED25519, raw)


# hivemind/utils/crypto.py: `_RSA_PADDING` and `_RSA_HASH_ALGORITHM`.
HIVEMIND_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
PSS_SALT_32 = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def peer_id_of_private_key_file(raw: bytes) -> str:
    """PeerId of a key file, derived with `cryptography` only."""
    key_type, data = parse_key_message(raw)
    if key_type == RSA:
        private_key = serialization.load_der_private_key(data, password=None)
        assert isinstance(private_key, rsa.RSAPrivateKey)
        return peer_id(rsa_public_message(private_key))
    if key_type == ED25519:
        private_key = ed25519.Ed25519PrivateKey.from_private_bytes(data[:32])
        if len(data) == 64:
            assert ed25519_public_message(private_key)[4:] == data[32:], "public half matches seed"
        else:
            assert len(data) == 32
        return peer_id(ed25519_public_message(private_key))
    raise ValueError(f"key type {key_type}")


# --- Fixtures -----------------------------------------------------------------


def write(name: str, data: bytes) -> None:
    (FIXTURES / name).write_bytes(data)
    print(f"wrote tests/fixtures/{name} ({len(data)} bytes)")


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def make_published() -> None:
    write("go_libp2p_ed25519_client.key", bytes.fromhex(GO_ED25519_CLIENT_HEX))
    write("go_libp2p_ed25519_zero.key", bytes.fromhex(GO_ED25519_ZERO_HEX))
    write("go_libp2p_rsa2048.key", base64.b64decode("".join(GO_RSA2048_B64.split())))
    # rust_libp2p_rsa4096.{key,pub} were copied from the hex literals of
    # rust-libp2p identity/src/keypair.rs (test keypair_from_protobuf_encoding);
    # check_published() checks them.


def check_published() -> None:
    checks = [
        ("go_libp2p_ed25519_client.key", GO_ED25519_CLIENT_PEER_ID),
        ("go_libp2p_ed25519_zero.key", GO_ED25519_ZERO_PEER_ID),
        ("go_libp2p_rsa2048.key", GO_RSA2048_PEER_ID),
    ]
    for name, expected in checks:
        got = peer_id_of_private_key_file(read(name))
        assert got == expected, f"{name}: PeerId {got}, published {expected}"
        print(f"ok  {name}: {got}")
    for name, message, sig in [
        ("go_libp2p_ed25519_client.key", GO_ED25519_CLIENT_MESSAGE, GO_ED25519_CLIENT_SIG),
        ("go_libp2p_ed25519_zero.key", GO_ED25519_ZERO_MESSAGE, GO_ED25519_ZERO_SIG),
    ]:
        _, data = parse_key_message(read(name))
        key = ed25519.Ed25519PrivateKey.from_private_bytes(data[:32])
        assert key.sign(message) == base64.urlsafe_b64decode(sig), f"{name}: published signature"
        print(f"ok  {name}: published signature")
    # rust-libp2p RSA-4096: the public key protobuf is the SPKI of the private key.
    key_type, data = parse_key_message(read("rust_libp2p_rsa4096.key"))
    assert key_type == RSA
    private_key = serialization.load_der_private_key(data, password=None)
    assert rsa_public_message(private_key) == read("rust_libp2p_rsa4096.pub")
    print(f"ok  rust_libp2p_rsa4096.key: {peer_id(read('rust_libp2p_rsa4096.pub'))}")


def make_python() -> None:
    """Keys as the Python Hypertensor mesh writes them."""
    write("hivemind_message.txt", MESSAGE)

    # RSA: hivemind RSAPrivateKey (65537, 2048 bits), `to_bytes()` =
    # DER TraditionalOpenSSL (PKCS#1), wrapped in PrivateKey{Type=RSA}.
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs1 = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    write("hivemind_rsa.key", key_message(RSA, pkcs1))
    public = rsa_public_message(private_key)
    write("hivemind_rsa.pub", public)
    write("hivemind_rsa.peer_id", (peer_id(public) + "\n").encode())
    # hivemind signs with PSS(MGF1(SHA256), MAX_LENGTH) and SHA256 (and then
    # base64-encodes the signature; these files hold the raw signatures).
    write("hivemind_rsa.pss_max.sig", private_key.sign(MESSAGE, HIVEMIND_PSS, hashes.SHA256()))
    write("hivemind_rsa.pss32.sig", private_key.sign(MESSAGE, PSS_SALT_32, hashes.SHA256()))

    # Ed25519: the Hypertensor keygen (subnet/cli/crypto/keygen.py of
    # hypertensor-blockchain/dsn) writes Data = raw seed + raw public key;
    # py-libp2p (hypertensor-blockchain/subnet-template) writes the 32-byte seed.
    ed = ed25519.Ed25519PrivateKey.generate()
    seed = ed.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    raw_public = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    write("hivemind_ed25519.key", key_message(ED25519, seed + raw_public))
    write("py_libp2p_ed25519_seed.key", key_message(ED25519, seed))
    write("hivemind_ed25519.peer_id", (peer_id(ed25519_public_message(ed)) + "\n").encode())
    write("hivemind_ed25519.sig", ed.sign(MESSAGE))


def check_python() -> None:
    message = read("hivemind_message.txt")
    raw = read("hivemind_rsa.key")
    expected = read("hivemind_rsa.peer_id").decode().strip()
    assert peer_id_of_private_key_file(raw) == expected
    assert peer_id(read("hivemind_rsa.pub")) == expected
    _, data = parse_key_message(raw)
    private_key = serialization.load_der_private_key(data, password=None)
    public_key = private_key.public_key()
    public_key.verify(read("hivemind_rsa.pss_max.sig"), message, HIVEMIND_PSS, hashes.SHA256())
    public_key.verify(read("hivemind_rsa.pss32.sig"), message, PSS_SALT_32, hashes.SHA256())
    print(f"ok  hivemind_rsa.key: {expected}, both signatures")

    expected = read("hivemind_ed25519.peer_id").decode().strip()
    assert peer_id_of_private_key_file(read("hivemind_ed25519.key")) == expected
    assert peer_id_of_private_key_file(read("py_libp2p_ed25519_seed.key")) == expected
    _, data = parse_key_message(read("hivemind_ed25519.key"))
    ed = ed25519.Ed25519PrivateKey.from_private_bytes(data[:32])
    ed.public_key().verify(read("hivemind_ed25519.sig"), message)
    print(f"ok  hivemind_ed25519.key, py_libp2p_ed25519_seed.key: {expected}, signature")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only verify the committed fixtures")
    args = parser.parse_args()
    if not args.check:
        FIXTURES.mkdir(parents=True, exist_ok=True)
        make_published()
        make_python()
    check_published()
    check_python()
    return 0


if __name__ == "__main__":
    sys.exit(main())
