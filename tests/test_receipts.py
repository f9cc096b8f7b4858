"""Receipts and request signatures: standard EIP-191 signatures any Ethereum tool recovers, bound
to one deployment, lease, index and pair of line hashes."""

from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_checksum_address

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
