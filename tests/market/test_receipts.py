"""Receipts and request signatures: standard EIP-191 signatures any Ethereum tool recovers, bound
to one deployment, lease, index and pair of line hashes."""

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_checksum_address

from veracity.errors import SignatureError
from veracity.market import receipts as R

KEY = "0x" + "42" * 32
MARKET = "0x" + "ab" * 20


def test_a_receipt_is_a_standard_signature_over_its_fields():
    item = {"text": "a cat sat"}
    i, o = R.line_hash(R.input_line(item)), R.line_hash(R.output_line(item, [0.5, -0.25]))
    r = R.sign_receipt(KEY, 31337, MARKET, 7, 3, i, o)
    assert r.provider == Account.from_key(KEY).address == r.signer()
    body = encode(["bytes32", "uint256", "address", "uint256", "uint256", "bytes32", "bytes32"],
                  [keccak(b"receipt"), 31337, to_checksum_address(MARKET), 7, 3, bytes.fromhex(i[2:]),
                   bytes.fromhex(o[2:])])
    assert Account.recover_message(encode_defunct(primitive=keccak(body)),
                                   signature=bytes.fromhex(r.signature[2:])) == r.provider
    for change in ({"index": 4}, {"lease": 8}, {"output_hash": i}, {"chain_id": 1}):
        assert r.model_copy(update=change).signer() != r.provider


def test_a_request_signature_names_its_signer_and_nothing_else():
    h = R.line_hash(R.input_line({"text": "x"}))
    sig = R.sign_request(KEY, 31337, MARKET, 7, 0, h)
    assert R.request_signer(sig, 31337, MARKET, 7, 0, h) == Account.from_key(KEY).address
    assert R.request_signer(sig, 31337, MARKET, 7, 1, h) != Account.from_key(KEY).address


def _high_s_twin(signature: str) -> str:
    """The other valid ECDSA signature of the same message by the same key: (r, n - s), v flipped."""
    raw = bytes.fromhex(signature[2:])
    s = int.from_bytes(raw[32:64], "big")
    return "0x" + (raw[:32] + (R.SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - raw[64]])).hex()


def test_signatures_are_low_s_and_their_high_s_twins_are_refused():
    item = {"text": "a cat sat"}
    i, o = R.line_hash(R.input_line(item)), R.line_hash(R.output_line(item, [0.5]))
    r = R.sign_receipt(KEY, 31337, MARKET, 7, 3, i, o)
    twin = r.model_copy(update={"signature": _high_s_twin(r.signature)})
    # the twin is a genuine signature by the same key: a lax recoverer (eth-account) accepts it
    body = encode(["bytes32", "uint256", "address", "uint256", "uint256", "bytes32", "bytes32"],
                  [keccak(b"receipt"), 31337, to_checksum_address(MARKET), 7, 3, bytes.fromhex(i[2:]),
                   bytes.fromhex(o[2:])])
    assert Account.recover_message(encode_defunct(primitive=keccak(body)),
                                   signature=bytes.fromhex(twin.signature[2:])) == r.provider
    assert r.signer() == r.provider
    with pytest.raises(SignatureError, match=r"the signature is malleable \(high s\)"):
        twin.signer()

    sig = R.sign_request(KEY, 31337, MARKET, 7, 0, i)
    assert R.request_signer(sig, 31337, MARKET, 7, 0, i) == r.provider
    with pytest.raises(SignatureError, match=r"the signature is malleable \(high s\)"):
        R.request_signer(_high_s_twin(sig), 31337, MARKET, 7, 0, i)

    for index in range(200):  # libsecp256k1 always signs low-s, so nothing we sign is ever refused
        s = int.from_bytes(bytes.fromhex(R.sign_request(KEY, 31337, MARKET, 7, index, i)[2:])[32:64], "big")
        assert 0 < s <= R.SECP256K1_N // 2


def test_malformed_signatures_are_refused_with_a_reason():
    h = R.line_hash(R.input_line({"text": "x"}))
    sig = R.sign_request(KEY, 31337, MARKET, 7, 0, h)
    for bad, reason in ((sig[:-2], "64 bytes, not 65"), (sig[:-2] + "01", "v is 1, not 27 or 28"),
                        ("0x" + "00" * 32 + sig[66:], "outside 1..secp256k1n-1"), ("0xzz", "not hex")):
        with pytest.raises(SignatureError, match=reason):
            R.request_signer(bad, 31337, MARKET, 7, 0, h)
