# pragma version ~=0.4.3
"""
@title DigitLabeler
@notice An example Oracle consumer: label a handwritten digit on chain. `label(pixels, ...)` asks
        the Veracity Oracle for the exact digits MLP on an 8x8 image (its input line,
        `{"pixels": [64 integers 0..16]}`); once the result is committed, unchallenged through
        its window and delivered, `on_result` reads the class out of the committed output line
        (`{"pixels": [...], "output": {"class": N, "logits": [...]}}`) and stores it. The
        caller pays the request (approve this contract for `payment` first).
"""

from ethereum.ercs import IERC20

MAX_INPUT: constant(uint256) = 1024
MAX_OUTPUT: constant(uint256) = 4096
KEY: constant(Bytes[9]) = b'"class": '


interface IOracle:
    def request(model: String[32], input: Bytes[MAX_INPUT], callback: address, payment: uint256,
                program_root: bytes32, program_length: uint256) -> uint256: nonpayable


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
    @notice Ask which digit `pixels` (the input line) shows; returns the Oracle's request id.
    """
    assert extcall token.transferFrom(msg.sender, self, payment), "labeler: payment transfer failed"
    assert extcall token.approve(oracle.address, payment), "labeler: approve failed"
    request_id: uint256 = extcall oracle.request("digits-mlp", pixels, self, payment, program_root, program_length)
    self.requester[request_id] = msg.sender
    return request_id


@internal
@pure
def _class_of(output: Bytes[MAX_OUTPUT]) -> uint256:
    """The integer after `"class": ` in the output line."""
    n: uint256 = len(output)
    for i: uint256 in range(MAX_OUTPUT):
        if i + 9 > n:
            break
        if slice(output, i, 9) == KEY:
            value: uint256 = 0
            for j: uint256 in range(i + 9, i + 12, bound=MAX_OUTPUT):
                if j >= n:
                    break
                c: uint256 = convert(convert(slice(output, j, 1), bytes1), uint256)
                if c < 48 or c > 57:
                    break
                value = value * 10 + c - 48
            return value
    raise "labeler: the output has no class"


@external
def on_result(request_id: uint256, output: Bytes[MAX_OUTPUT]):
    """
    @notice The Oracle's callback with the committed output line.
    """
    assert msg.sender == oracle.address, "labeler: only the oracle calls back"
    assert self.requester[request_id] != empty(address) and not self.labelled[request_id], \
        "labeler: not a request of this labeler"
    d: uint256 = self._class_of(output)
    self.digit[request_id] = d
    self.labelled[request_id] = True
    log Labelled(request_id=request_id, requester=self.requester[request_id], digit=d)
