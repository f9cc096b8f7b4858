# pragma version ~=0.4.3
"""
@title DigitLabeler
@notice An example Oracle consumer: label a handwritten digit on chain. `label(pixels, ...)` asks
        the Veracity Oracle for the exact digits MLP on an 8x8 image (its input line,
        `{"pixels": [64 integers 0..16]}`); once the result is committed, unchallenged through
        its window and delivered, `on_result` reads the digit out of the committed output and
        stores it. The output is the job's canonical output blob (`veracity/exact/outputs.py`),
        which the Oracle checked against the committed output root: here one tensor, the MLP's
        logits, `b"VXT2" || dtype (3 int16 or 4 int32) || ndim 2 || dims 1, 10 (u32 BE each)`
        then the 10 logits, big endian. The digit is their argmax (the lowest index on a tie,
        as the model's `present` gives its "class"). The caller pays the request (approve this
        contract for `payment` first).
"""

from ethereum.ercs import IERC20

from interfaces import IConsumer
from interfaces import IOracle

implements: IConsumer

MAX_INPUT: constant(uint256) = 1024
MAX_OUTPUT: constant(uint256) = 4096
CLASSES: constant(uint256) = 10


event Labelled:
    request_id: indexed(uint256)
    requester: indexed(address)
    digit: uint256


token: public(immutable(IERC20))
oracle: public(immutable(IOracle))
requester: public(HashMap[uint256, address])
labelled: public(HashMap[uint256, bool])
digit: public(HashMap[uint256, uint256])


@deploy
def __init__(token_: IERC20, oracle_: IOracle):
    token = token_
    oracle = oracle_


@external
def label(pixels: Bytes[MAX_INPUT], payment: uint256, program_root: bytes32, program_length: uint256) -> uint256:
    """
    @notice Ask which digit `pixels` (the input line) shows.
    @param pixels The input line, `{"pixels": [64 integers 0..16]}`.
    @param payment What the request pays.
    @param program_root The job's program's Merkle root.
    @param program_length The program's record count.
    @return The Oracle's request id.
    """
    assert extcall token.transferFrom(msg.sender, self, payment), "labeler: payment transfer failed"
    assert extcall token.approve(oracle.address, payment), "labeler: approve failed"
    request_id: uint256 = extcall oracle.request("digits-mlp", pixels, self, payment, program_root, program_length)
    self.requester[request_id] = msg.sender
    return request_id


@internal
@pure
def _class_of(output: Bytes[MAX_OUTPUT]) -> uint256:
    """The argmax of the logits tensor that is the output (the lowest index on a tie)."""
    assert len(output) >= 14 and slice(output, 0, 4) == b"VXT2", "labeler: the output is not a tensor"
    dtype: bytes1 = convert(slice(output, 4, 1), bytes1)
    assert dtype == 0x03 or dtype == 0x04, "labeler: the logits are int16 or int32"
    assert slice(output, 5, 9) == b"\x02\x00\x00\x00\x01\x00\x00\x00\x0a", "labeler: the logits are one row of 10"
    w: uint256 = 2
    if dtype == 0x04:
        w = 4
    assert len(output) == 14 + CLASSES * w, "labeler: the output is not one tensor of 10 logits"
    best: uint256 = 0
    top: int256 = min_value(int256)
    for i: uint256 in range(CLASSES):
        v: int256 = 0
        if w == 2:
            v = convert(convert(convert(slice(output, 14 + 2 * i, 2), bytes2), int16), int256)
        else:
            v = convert(convert(convert(slice(output, 14 + 4 * i, 4), bytes4), int32), int256)
        if v > top:
            best = i
            top = v
    return best


@external
def on_result(request_id: uint256, output: Bytes[MAX_OUTPUT]):
    """
    @notice The Oracle's callback with the committed output (its canonical output blob).
    @param request_id The request's id.
    @param output The committed output blob.
    """
    assert msg.sender == oracle.address, "labeler: only the oracle calls back"
    assert self.requester[request_id] != empty(address) and not self.labelled[request_id], \
        "labeler: not a request of this labeler"
    d: uint256 = self._class_of(output)
    self.digit[request_id] = d
    self.labelled[request_id] = True
    log Labelled(request_id=request_id, requester=self.requester[request_id], digit=d)
