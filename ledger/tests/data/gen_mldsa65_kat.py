#!/usr/bin/env python3
"""Generate ML-DSA-65 known-answer vectors with an independent implementation.

Implementation: dilithium-py 1.5.1 (pure Python FIPS 204, https://pypi.org/project/dilithium-py/,
MIT licence), installed with `pip install dilithium-py==1.5.1`.

Run: python3 gen_mldsa65_kat.py > mldsa65_kat.json

Every vector is: a 32-byte KeyGen seed (xi), the public key that FIPS 204 ML-DSA.KeyGen_internal
derives from it, and deterministic (rnd = 0^32) pure ML-DSA signatures of messages under a
context string, plus negative cases (modified signature / message / context / key).
"""
import hashlib
import json

from dilithium_py.ml_dsa import ML_DSA_65 as M

CTX = b"dunes-ledger-checkpoint-v1"


def seed(i: int) -> bytes:
    return hashlib.sha256(b"dunes-kat-seed-%d" % i).digest()


messages = [
    (b"", CTX),
    (b"Hello world", b""),
    (b"dunes/kat\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\ntime 1700000000000000\nkey-epoch 0\n", CTX),
    (bytes(range(256)) * 4, b"x" * 255),
]

groups = []
for i in range(3):
    pk, sk = M.key_derive(seed(i))
    tests = []
    for j, (msg, ctx) in enumerate(messages):
        sig = M.sign(sk, msg, ctx=ctx, deterministic=True)
        assert M.verify(pk, msg, sig, ctx=ctx)
        tests.append({"comment": f"valid deterministic signature {j}", "msg": msg.hex(),
                      "ctx": ctx.hex(), "sig": sig.hex(), "deterministic": True, "result": "valid"})
        if j == 2:
            bad = bytearray(sig)
            bad[(i * 977 + 11) % len(bad)] ^= 0x01
            assert not M.verify(pk, msg, bytes(bad), ctx=ctx)
            tests.append({"comment": "modified signature (one bit flipped)", "msg": msg.hex(),
                          "ctx": ctx.hex(), "sig": bytes(bad).hex(), "deterministic": False,
                          "result": "invalid"})
            wrong_msg = msg[:-2] + b"1\n"
            assert not M.verify(pk, wrong_msg, sig, ctx=ctx)
            tests.append({"comment": "modified message", "msg": wrong_msg.hex(), "ctx": ctx.hex(),
                          "sig": sig.hex(), "deterministic": False, "result": "invalid"})
            assert not M.verify(pk, msg, sig, ctx=b"dunes-ledger-checkpoint-v2")
            tests.append({"comment": "wrong context string", "msg": msg.hex(),
                          "ctx": b"dunes-ledger-checkpoint-v2".hex(), "sig": sig.hex(),
                          "deterministic": False, "result": "invalid"})
            assert not M.verify(pk, msg, sig[:-1], ctx=ctx)
            tests.append({"comment": "truncated signature", "msg": msg.hex(), "ctx": ctx.hex(),
                          "sig": sig[:-1].hex(), "deterministic": False, "result": "invalid"})
    groups.append({"seed": seed(i).hex(), "publicKey": pk.hex(), "tests": tests})

print(json.dumps({
    "algorithm": "ML-DSA-65",
    "generator": "dilithium-py 1.5.1 (pure Python FIPS 204), ledger/tests/data/gen_mldsa65_kat.py",
    "testGroups": groups,
}, indent=1))
