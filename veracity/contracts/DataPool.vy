# pragma version ~=0.4.3
# pragma optimize codesize
"""
@title Veracity DataPool
@notice Data pools with proof of contribution. A pool's owner funds its epoch rewards and its
        scoring; contributors submit a blob's CID with an EIP-712 signature bound to (chain id,
        this contract, pool, CID, contributor), so a contribution signed for one pool cannot be
        replayed to another pool, contract or chain. A pool of device data also needs the
        signature of a device key the pool registered to that contributor (as DePIN networks do).

        A contribution is first committed (`commit`: a hash of its CID, contributor and a salt)
        and revealed in a later block (`contribute`), and its blob is pushed to the nodes only
        then: nobody who sees a CID in the mempool or a blob on a node can claim it first. It
        carries a deposit, returned when the item is accepted and otherwise sent to the treasury
        (spam costs its sender; nobody in the pool profits from another's loss).

        Each contribution is scored by a `score` job (`veracity/workloads/score.py`: the exact
        MiniLM embedding of the item) that this contract opens on the Market as its client, so
        providers bid, run and commit it like any job, validators re-execute it and a dispute
        judges it record by record. The job's program (root and length) is the one the
        contributor signed with its contribution: the curator (the pool's owner, or an account
        it names, which picks the bid and pays for the scoring) cannot swap it. Once the
        result's window has passed, anyone `deliver`s the committed output (the provider, to be
        paid): this contract checks it against the order's output root and keeps its hash; then
        anyone `settle`s the item, in contribution order, and the contract computes the score:
          quality    = the embedding's cosine with the pool's topic embedding, in basis points
                       (0 when negative);
          similarity = its highest cosine with the embeddings of the items the pool accepted
                       before it (each given with the call and checked against its hash here);
          score      = quality, or 0 for a near-copy (similarity at or above the pool's
                       threshold, or the very embedding of an accepted item).
        An item with a positive score is accepted: its embedding's hash joins the pool's
        reference set. Items are settled in the order they were contributed, so each one is
        compared with exactly the accepted items before it. The score lands on chain bound to
        (chain id, this contract, pool, CID, program root): `score_binding`.

        At each epoch's end, once its items are settled, anyone calls `pay_epoch`: the epoch's
        reward is split among its contributors in proportion to their scores (floor division,
        exact to the wei). What is left goes back to the owner only when nobody contributed in
        the epoch; otherwise to the treasury, so the pool's side never gains by zeroing a score. A consumer `buy`s the pool's
        data (to fine-tune on its accepted items): the payment is split the same way among all
        the pool's contributors by their accepted scores.

        Embeddings are 384 int32 values in 2**15 fixed point (unit vectors), big endian: the data
        of the score job's one output tensor, whose canonical blob (`veracity/exact/outputs.py`) is
        HEADER then those 1536 bytes. Cosines are dot products over 2**30.
"""

from ethereum.ercs import IERC20
from snekmate.utils import ecdsa
from snekmate.utils import eip712_domain_separator as eip712

from interfaces import IMarket

initializes: eip712
exports: eip712.eip712Domain

CONTRIBUTION_TYPEHASH: constant(bytes32) = keccak256(
    "Contribution(uint256 pool,bytes32 cid,address contributor,bytes32 programRoot,uint256 programLength)")
EMB: constant(uint256) = 1536  # an embedding's bytes: 384 int32, big endian
OUTPUT: constant(uint256) = 1550  # the score job's canonical output blob: HEADER, then the embedding
HEADER: constant(Bytes[14]) = x"5658543204020000000100000180"  # "VXT2", int32, 2 dims: 1 x 384
ONE: constant(int256) = 2**30  # a unit vector's dot product with itself
MAX_BPS: constant(uint256) = 10000
MAX_ACCEPTED: constant(uint256) = 64  # a pool's reference set (each item is compared with all of them)
MAX_CONTRIBUTIONS: constant(uint256) = 256
MAX_SPEC: constant(uint256) = 160
BASE32: constant(Bytes[32]) = b"abcdefghijklmnopqrstuvwxyz234567"
KIND_SCORE: constant(uint8) = 4
MINILM: constant(bytes32) = sha256("minilm")
SUBMITTED: constant(uint8) = 1  # a contribution's states
SCORING: constant(uint8) = 2
SCORED: constant(uint8) = 3
REJECTED: constant(uint8) = 4
DELIVERED: constant(uint8) = 5  # its score job's output is final and checked: it waits its turn to be scored
M_OPEN: constant(uint8) = 1  # the Market's order states
M_ACCEPTED: constant(uint8) = 2
M_COMMITTED: constant(uint8) = 3
M_FINALIZED: constant(uint8) = 4
M_REFUNDED: constant(uint8) = 5
M_OVERTURNED: constant(uint8) = 7
BY_EPOCH: constant(uint8) = 1  # why a contributor is paid
BY_SALE: constant(uint8) = 2


struct Pool:
    owner: address
    curator: address
    schema_cid: bytes32
    topic_hash: bytes32  # keccak256 of the topic's embedding (EMB bytes, given in PoolCreated)
    threshold_bps: uint256  # a cosine at or above this with an accepted item: a near-copy
    devices: bool  # contributions must carry a registered device's signature
    start: uint256
    epoch_length: uint256
    epochs: uint256
    epoch_reward: uint256
    score_budget: uint256  # what score orders may still spend
    contributions: uint256
    next_settled: uint256  # contributions are settled in order
    accepted: uint256
    total_score: uint256  # of accepted items: what a sale is split by
    deposit: uint256  # each contribution's, returned when it is accepted


struct Contribution:
    contributor: address
    cid: bytes32
    epoch: uint256
    state: uint8
    order_id: uint256
    score: uint256
    program_root: bytes32  # the score job's program, as the contributor signed it
    program_length: uint256


event PoolCreated:
    pool: indexed(uint256)
    owner: indexed(address)
    curator: address
    schema_cid: bytes32
    topic: Bytes[EMB]
    threshold_bps: uint256
    devices: bool
    start: uint256
    epoch_length: uint256
    epochs: uint256
    epoch_reward: uint256
    score_budget: uint256
    deposit: uint256

event DeviceRegistered:
    pool: indexed(uint256)
    device: indexed(address)
    contributor: indexed(address)

event Contributed:
    pool: indexed(uint256)
    index: uint256
    contributor: indexed(address)
    cid: bytes32
    epoch: uint256
    device: address

event ScoreOrdered:
    pool: indexed(uint256)
    index: uint256
    order_id: indexed(uint256)
    spec_cid: bytes32

event Scored:
    pool: indexed(uint256)
    index: uint256
    contributor: indexed(address)
    cid: bytes32
    order_id: indexed(uint256)
    program_root: bytes32
    quality_bps: uint256
    similarity_bps: int256
    score: uint256
    binding: bytes32

event Accepted:
    pool: indexed(uint256)
    index: uint256
    position: uint256
    embedding: Bytes[EMB]

event Delivered:
    pool: indexed(uint256)
    index: uint256
    order_id: indexed(uint256)

event Rejected:
    pool: indexed(uint256)
    index: uint256
    reason: String[48]

event Paid:
    pool: indexed(uint256)
    contributor: indexed(address)
    amount: uint256
    why: uint8  # BY_EPOCH or BY_SALE
    epoch: uint256  # the epoch paid (a sale: its number)

event EpochPaid:
    pool: indexed(uint256)
    epoch: uint256
    total_score: uint256
    reward: uint256
    remainder: uint256
    remainder_to: address  # the owner when nobody contributed in the epoch, else the treasury

event Bought:
    pool: indexed(uint256)
    buyer: indexed(address)
    sale: uint256
    amount: uint256
    dataset_cid: bytes32
    items: uint256
    remainder: uint256


token: public(immutable(IERC20))
market: public(immutable(IMarket))
treasury: public(immutable(address))  # forfeited deposits and unpaid rewards of epochs with contributions
deadline_s: public(immutable(uint256))
challenge_window: public(immutable(uint256))
spot_check_bps: public(immutable(uint256))
pool_count: public(uint256)
pools: public(HashMap[uint256, Pool])
items: public(HashMap[uint256, HashMap[uint256, Contribution]])
seen: public(HashMap[uint256, HashMap[bytes32, bool]])  # a CID once per pool
devices: public(HashMap[uint256, HashMap[address, address]])  # device key -> the contributor it belongs to
accepted_hash: public(HashMap[uint256, HashMap[uint256, bytes32]])  # the reference set, in acceptance order
commitments: public(HashMap[uint256, HashMap[bytes32, uint256]])  # a contribution's commitment -> its block
delivered: public(HashMap[uint256, HashMap[uint256, bytes32]])  # a delivered item's embedding hash
order_pool: public(HashMap[uint256, uint256])  # a score order -> its pool + 1 (0: not ours)
order_index: public(HashMap[uint256, uint256])
epoch_total: public(HashMap[uint256, HashMap[uint256, uint256]])
epoch_pending: public(HashMap[uint256, HashMap[uint256, uint256]])  # contributions not settled yet
epoch_score: public(HashMap[uint256, HashMap[uint256, HashMap[address, uint256]]])
epoch_members: HashMap[uint256, HashMap[uint256, DynArray[address, MAX_ACCEPTED]]]
epoch_paid: public(HashMap[uint256, HashMap[uint256, bool]])
epoch_count: public(HashMap[uint256, HashMap[uint256, uint256]])  # contributions per epoch
members: HashMap[uint256, DynArray[address, MAX_ACCEPTED]]  # contributors with an accepted item
member_score: public(HashMap[uint256, HashMap[address, uint256]])
sales: public(HashMap[uint256, uint256])


@deploy
def __init__(token_: IERC20, market_: IMarket, treasury_: address, deadline_s_: uint256,
             challenge_window_: uint256, spot_check_bps_: uint256):
    eip712.__init__("Veracity DataPool", "1")
    token = token_
    market = market_
    treasury = treasury_
    deadline_s = deadline_s_
    challenge_window = challenge_window_
    spot_check_bps = spot_check_bps_


# pools --------------------------------------------------------------------------------------------

@external
def create_pool(schema_cid: bytes32, topic: Bytes[EMB], threshold_bps: uint256, devices: bool,
                epoch_length: uint256, epochs: uint256, epoch_reward: uint256, score_budget: uint256,
                deposit: uint256, curator: address) -> uint256:
    """
    @notice Open a pool: pulls epochs * epoch_reward + score_budget from the caller (approve first).
    @param schema_cid The CID of the pool's schema document (for people: what items it wants).
    @param topic The topic's embedding (EMB bytes): an item's quality is its cosine with it.
    @param threshold_bps A cosine with an accepted item at or above this makes a near-copy (score 0).
    @param devices Whether each contribution needs a registered device's signature.
    @param epoch_length Seconds per epoch; the first starts now.
    @param epochs How many epochs take contributions.
    @param epoch_reward What each epoch pays its contributors.
    @param score_budget What the pool's score orders may spend.
    @param deposit What each contribution puts down (returned when it is accepted).
    @param curator Who orders the scoring and registers devices (with the owner).
    @return The pool's id.
    """
    assert len(topic) == EMB, "datapool: the topic is an embedding of 384 int32 values (1536 bytes)"
    assert threshold_bps > 0 and threshold_bps < MAX_BPS, "datapool: the threshold is 1 to 9999 basis points"
    assert epoch_length > 0 and epochs > 0 and epochs <= 1000, "datapool: 1 to 1000 epochs of positive length"
    assert curator != empty(address), "datapool: name a curator"
    funds: uint256 = epochs * epoch_reward + score_budget
    if funds > 0:
        assert extcall token.transferFrom(msg.sender, self, funds), "datapool: funding transfer failed"
    pool: uint256 = self.pool_count
    self.pool_count = pool + 1
    self.pools[pool] = Pool(owner=msg.sender, curator=curator, schema_cid=schema_cid, topic_hash=keccak256(topic),
                            threshold_bps=threshold_bps, devices=devices, start=block.timestamp,
                            epoch_length=epoch_length, epochs=epochs, epoch_reward=epoch_reward,
                            score_budget=score_budget, contributions=0, next_settled=0, accepted=0, total_score=0,
                            deposit=deposit)
    log PoolCreated(pool=pool, owner=msg.sender, curator=curator, schema_cid=schema_cid, topic=topic,
                    threshold_bps=threshold_bps, devices=devices, start=block.timestamp, epoch_length=epoch_length,
                    epochs=epochs, epoch_reward=epoch_reward, score_budget=score_budget, deposit=deposit)
    return pool


@external
def register_device(pool: uint256, device: address, contributor: address):
    """
    @notice Register a device key of `contributor` (the pool's owner or curator).
    @param pool The pool.
    @param device The device's key (its address).
    @param contributor Whose device it is.
    """
    p: Pool = self.pools[pool]
    assert msg.sender == p.owner or msg.sender == p.curator, "datapool: only the pool's owner or curator registers devices"
    assert device != empty(address) and contributor != empty(address), "datapool: a device and its contributor"
    assert self.devices[pool][device] == empty(address), "datapool: that device is registered already"
    self.devices[pool][device] = contributor
    log DeviceRegistered(pool=pool, device=device, contributor=contributor)


@external
def fund_scoring(pool: uint256, amount: uint256):
    """
    @notice Add to a pool's scoring budget (anyone; approve first).
    @param pool The pool.
    @param amount What to add.
    """
    assert self.pools[pool].owner != empty(address), "datapool: no such pool"
    assert extcall token.transferFrom(msg.sender, self, amount), "datapool: funding transfer failed"
    self.pools[pool].score_budget += amount


# contributions ------------------------------------------------------------------------------------

@internal
@view
def _digest(pool: uint256, cid: bytes32, contributor: address, program_root: bytes32,
            program_length: uint256) -> bytes32:
    return eip712._hash_typed_data_v4(keccak256(abi_encode(CONTRIBUTION_TYPEHASH, pool, cid, contributor,
                                                           program_root, program_length)))


@external
@view
def contribution_digest(pool: uint256, cid: bytes32, contributor: address, program_root: bytes32,
                        program_length: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a contributor (and its device) signs to contribute `cid` to `pool`.
    @param pool The pool.
    @param cid The blob's CID (its sha2-256 digest).
    @param contributor The contributor.
    @param program_root The score job's program root (`veracity data program`).
    @param program_length Its record count.
    @return The digest (domain: "Veracity DataPool", "1", the chain id, this contract).
    """
    return self._digest(pool, cid, contributor, program_root, program_length)


@external
def commit(pool: uint256, commitment: bytes32):
    """
    @notice Commit to a contribution before revealing it (anyone may relay it).
    @param pool The pool.
    @param commitment keccak256(abi_encode(cid, contributor, salt)).
    """
    assert self.commitments[pool][commitment] == 0, "datapool: that commitment is made already"
    self.commitments[pool][commitment] = block.number


@external
def contribute(pool: uint256, contributor: address, cid: bytes32, salt: bytes32, program_root: bytes32,
               program_length: uint256, signature: Bytes[65], device_signature: Bytes[65]) -> uint256:
    """
    @notice Reveal a committed contribution (in a later block than its commitment; anyone may
            relay it: the signatures say whose it is). The caller puts down the pool's deposit,
            which goes to the contributor if the item is accepted.
    @param pool The pool.
    @param contributor The contributor, who signed `contribution_digest`.
    @param cid The blob's CID (its sha2-256 digest).
    @param salt The commitment's salt.
    @param program_root The score job's program root, as signed.
    @param program_length Its record count, as signed.
    @param signature The contributor's signature.
    @param device_signature A registered device's signature of the same digest (a device pool; else empty).
    @return The contribution's index in the pool.
    """
    p: Pool = self.pools[pool]
    assert p.owner != empty(address), "datapool: no such pool"
    assert block.timestamp < p.start + p.epochs * p.epoch_length, "datapool: the pool's epochs are over"
    assert p.contributions < MAX_CONTRIBUTIONS, "datapool: the pool takes no more contributions"
    assert p.accepted < MAX_ACCEPTED, "datapool: the pool is full (it has accepted as many items as it compares)"
    assert not self.seen[pool][cid], "datapool: that CID was contributed to this pool already"
    committed: uint256 = self.commitments[pool][keccak256(abi_encode(cid, contributor, salt))]
    assert committed != 0 and committed < block.number, \
        "datapool: commit to the contribution first, and reveal it in a later block"
    assert program_length > 0, "datapool: sign the score job's program (root and length)"
    digest: bytes32 = self._digest(pool, cid, contributor, program_root, program_length)
    assert contributor != empty(address) and ecdsa._recover_sig(digest, signature) == contributor, \
        "datapool: the signature is not the contributor's for this pool and CID"
    device: address = empty(address)
    if p.devices:
        assert len(device_signature) == 65, "datapool: this pool takes device data: a device signature is needed"
        device = ecdsa._recover_sig(digest, device_signature)
        assert device != empty(address) and self.devices[pool][device] == contributor, \
            "datapool: the device signature is not from a device registered to the contributor"
    epoch: uint256 = (block.timestamp - p.start) // p.epoch_length
    index: uint256 = p.contributions
    if p.deposit > 0:
        assert extcall token.transferFrom(msg.sender, self, p.deposit), "datapool: deposit transfer failed"
    self.items[pool][index] = Contribution(contributor=contributor, cid=cid, epoch=epoch, state=SUBMITTED,
                                           order_id=0, score=0, program_root=program_root,
                                           program_length=program_length)
    self.seen[pool][cid] = True
    self.pools[pool].contributions = index + 1
    self.epoch_pending[pool][epoch] += 1
    self.epoch_count[pool][epoch] += 1
    log Contributed(pool=pool, index=index, contributor=contributor, cid=cid, epoch=epoch, device=device)
    return index


# scoring ------------------------------------------------------------------------------------------

@internal
@pure
def _base32_cid(digest: bytes32) -> Bytes[59]:
    """The CIDv1 (raw, sha2-256) of a digest in base32, as `veracity/cid.py` writes it: "b", then
    base32 (lower case, unpadded) of 0x01551220 || digest: 58 characters of 5 bits each."""
    lo: uint256 = convert(digest, uint256)
    prefix: uint256 = 22352416  # 0x01551220: CIDv1, raw, sha2-256, 32 bytes
    words: uint256[2] = [0, 0]  # the 58 characters, 32 then 26, one byte each
    for i: uint256 in range(58):
        v: uint256 = 0
        if i < 6:  # bits 5i .. 5i+4 of the prefix
            v = (prefix >> (27 - 5 * i)) & 31
        elif i == 6:  # the prefix's last 2 bits, the digest's first 3
            v = ((prefix & 3) << 3) | (lo >> 253)
        elif i < 57:  # bits 5i-32 .. 5i-28 of the digest
            v = (lo >> (283 - 5 * i)) & 31
        else:  # the digest's last 3 bits, then 2 zero bits
            v = (lo & 7) << 2
        c: uint256 = convert(convert(slice(BASE32, v, 1), bytes1), uint256)
        if i < 32:
            words[0] = words[0] | (c << (8 * (31 - i)))
        else:
            words[1] = words[1] | (c << (8 * (63 - i)))
    return concat(b"b", convert(words[0], bytes32), slice(convert(words[1], bytes32), 0, 26))


@internal
@pure
def _spec(cid: bytes32) -> Bytes[MAX_SPEC]:
    return concat(b"kind: score\nmodel: minilm\nmax_price: 1\ndeadline: 3600\ninputs:\n  cid: ",
                  self._base32_cid(cid), b"\n")


@external
@pure
def score_spec(cid: bytes32) -> Bytes[MAX_SPEC]:
    """
    @notice The score job's spec for a contribution (its sha256 is the order's spec CID).
    @param cid The contribution's CID (its digest).
    @return The spec (YAML).
    """
    return self._spec(cid)


@internal
def _recover(order_id: uint256) -> uint256:
    """What an order that will never give a result returns to the pool (reverts while it still may)."""
    o: IMarket.Order = staticcall market.orders(order_id)
    before: uint256 = staticcall token.balanceOf(self)
    if o.state == M_OPEN or o.state == M_ACCEPTED:
        assert block.timestamp > o.deadline, "datapool: the score order's deadline has not passed"
        extcall market.reclaim(order_id)
    elif o.state == M_COMMITTED:  # reverts while the output can still be delivered
        extcall market.void_undelivered(order_id)
    else:
        assert o.state == M_REFUNDED or o.state == M_OVERTURNED, "datapool: the score order has a result"
        return o.price  # the Market returned the price when the dispute ended
    return staticcall token.balanceOf(self) - before


@external
def order_score(pool: uint256, index: uint256, max_price: uint256) -> uint256:
    """
    @notice The curator opens the score order of a contribution (again, when its last one failed:
            its refund goes back to the scoring budget), paid from the scoring budget, with the
            program the contributor signed; not once the item's grace has ended (anyone may then
            reject it, and nobody can keep re-ordering it to hold the pool).
    @param pool The pool.
    @param index The contribution.
    @param max_price What the order escrows.
    @return The Market order's id.
    """
    p: Pool = self.pools[pool]
    assert msg.sender == p.curator, "datapool: only the pool's curator orders scoring"
    c: Contribution = self.items[pool][index]
    assert c.state == SUBMITTED or c.state == SCORING, "datapool: that contribution is not waiting for a score order"
    assert block.timestamp < p.start + (c.epoch + 2) * p.epoch_length, \
        "datapool: the contribution's grace has ended: it can only be rejected"
    budget: uint256 = p.score_budget
    if c.state == SCORING:
        budget += self._recover(c.order_id)
    assert max_price > 0 and max_price <= budget, "datapool: the max price is not within the scoring budget"
    self.pools[pool].score_budget = budget - max_price
    spec: Bytes[MAX_SPEC] = self._spec(c.cid)
    assert extcall token.approve(market.address, max_price), "datapool: approve failed"
    order_id: uint256 = extcall market.open_order(sha256(spec), KIND_SCORE, MINILM, max_price,
                                                  block.timestamp + deadline_s, challenge_window, spot_check_bps,
                                                  c.program_root, c.program_length)
    self.items[pool][index].state = SCORING
    self.items[pool][index].order_id = order_id
    self.order_pool[order_id] = pool + 1
    self.order_index[order_id] = index
    log ScoreOrdered(pool=pool, index=index, order_id=order_id, spec_cid=sha256(spec))
    return order_id


@external
def accept(order_id: uint256, provider: address, price: uint256, collateral: uint256, expiry: uint256,
           run_time: uint256, signature: Bytes[65]):
    """
    @notice The curator accepts a provider's signed bid on a score order (the Market checks it and
            locks the collateral); what the price leaves of the escrow returns to the scoring budget.
    @param order_id The score order.
    @param provider The bidding provider.
    @param price The bid's price.
    @param collateral The provider's collateral.
    @param expiry When the bid expires.
    @param run_time The provider's run time.
    @param signature The provider's signature of the Market's `bid_digest`.
    """
    tagged: uint256 = self.order_pool[order_id]
    assert tagged != 0, "datapool: not a score order"
    pool: uint256 = tagged - 1
    assert msg.sender == self.pools[pool].curator, "datapool: only the pool's curator accepts bids"
    before: uint256 = staticcall token.balanceOf(self)
    extcall market.accept_bid(order_id, provider, price, collateral, expiry, run_time, signature)
    back: uint256 = staticcall token.balanceOf(self) - before
    self.pools[pool].score_budget += back


@internal
@pure
def _dot(a: Bytes[EMB], b: Bytes[EMB]) -> int256:
    """The dot product of two embeddings (384 int32, big endian), 8 lanes per word. Unchecked
    arithmetic is safe: each product is under 2**62 and the sum of 384 under 2**71."""
    acc: int256 = 0
    for w: uint256 in range(48):
        x: uint256 = extract32(a, 32 * w, output_type=uint256)
        y: uint256 = extract32(b, 32 * w, output_type=uint256)
        for lane: uint256 in range(8):
            at: uint256 = unsafe_mul(32, unsafe_sub(7, lane))
            u: uint256 = (x >> at) & (2**32 - 1)
            v: uint256 = (y >> at) & (2**32 - 1)
            su: int256 = unsafe_sub(convert(u, int256), convert((u >> 31) << 32, int256))  # two's complement
            sv: int256 = unsafe_sub(convert(v, int256), convert((v >> 31) << 32, int256))
            acc = unsafe_add(acc, unsafe_mul(su, sv))
    return acc


@internal
def _advance(pool: uint256, index: uint256, epoch: uint256):
    self.pools[pool].next_settled = index + 1
    self.epoch_pending[pool][epoch] -= 1


@external
def deliver(order_id: uint256, output: Bytes[OUTPUT]):
    """
    @notice Deliver a score order's committed output once its window has passed (anyone: its
            provider, to be paid; items are delivered in any order): finalizes the order, checks
            `output` is the committed output and keeps its embedding's hash for `settle`.
    @param order_id The score order.
    @param output The score job's canonical output blob.
    """
    tagged: uint256 = self.order_pool[order_id]
    assert tagged != 0, "datapool: not a score order"
    pool: uint256 = tagged - 1
    index: uint256 = self.order_index[order_id]
    c: Contribution = self.items[pool][index]
    assert c.state == SCORING and c.order_id == order_id, "datapool: that order's item is not awaiting its output"
    o: IMarket.Order = staticcall market.orders(order_id)
    if o.state == M_COMMITTED:
        extcall market.finalize(order_id)  # reverts while the window is open or a dispute runs
        o = staticcall market.orders(order_id)
    assert o.state == M_FINALIZED, "datapool: the score order has no final result"
    assert len(output) == OUTPUT and slice(output, 0, 14) == HEADER, \
        "datapool: the output is not one embedding (1 x 384 int32)"
    emb: Bytes[EMB] = slice(output, 14, EMB)
    root: bytes32 = sha256(concat(b"VXO1", x"00000001", sha256(concat(HEADER, sha256(concat(x"03", emb))))))
    assert root == o.output_cid, "datapool: that is not the committed output"
    self.delivered[pool][index] = keccak256(emb)
    self.items[pool][index].state = DELIVERED
    log Delivered(pool=pool, index=index, order_id=order_id)


@external
def settle(pool: uint256, index: uint256, embedding: Bytes[EMB], topic: Bytes[EMB],
           accepted: DynArray[Bytes[EMB], MAX_ACCEPTED]):
    """
    @notice Score the next contribution (anyone), from its delivered embedding, against the
            topic and every accepted item (their embeddings, in acceptance order: the `Accepted`
            events').
    @param pool The pool.
    @param index The contribution (the next one to settle).
    @param embedding Its delivered embedding (the `deliver`ed output's data).
    @param topic The pool's topic embedding (the `PoolCreated` event's).
    @param accepted The embeddings of the items the pool accepted so far, in order.
    """
    p: Pool = self.pools[pool]
    assert index == p.next_settled, "datapool: contributions are settled in order: settle the one before first"
    c: Contribution = self.items[pool][index]
    assert c.state == DELIVERED, "datapool: that contribution's score job output is not delivered yet"
    emb_hash: bytes32 = keccak256(embedding)
    assert emb_hash == self.delivered[pool][index], "datapool: that is not the delivered embedding"
    assert keccak256(topic) == p.topic_hash, "datapool: that is not the pool's topic embedding"
    assert len(accepted) == p.accepted, "datapool: give every accepted item's embedding"
    best: int256 = min_value(int256)
    copy: bool = False
    for i: uint256 in range(MAX_ACCEPTED):
        if i == len(accepted):
            break
        h: bytes32 = keccak256(accepted[i])
        assert h == self.accepted_hash[pool][i], "datapool: an accepted embedding is not the pool's"
        copy = copy or h == emb_hash
        best = max(best, self._dot(embedding, accepted[i]))
    quality: int256 = self._dot(embedding, topic)
    quality_bps: uint256 = 0
    if quality > 0:
        quality_bps = convert(quality * 10000 // ONE, uint256)
    similarity_bps: int256 = 0
    if len(accepted) > 0:
        similarity_bps = best * 10000 // ONE
    score: uint256 = quality_bps
    if copy or (len(accepted) > 0 and best * 10000 >= convert(p.threshold_bps, int256) * ONE):
        score = 0  # a near-copy of an accepted item
    full: bool = p.accepted == MAX_ACCEPTED
    if full:
        score = 0  # contributed while the pool had room; it filled up before this item's turn
    binding: bytes32 = keccak256(abi_encode(chain.id, self, pool, c.cid, c.program_root, score))
    self.items[pool][index].state = SCORED
    self.items[pool][index].score = score
    self._advance(pool, index, c.epoch)
    if score > 0:
        self.accepted_hash[pool][p.accepted] = emb_hash
        self.pools[pool].accepted = p.accepted + 1
        self.pools[pool].total_score = p.total_score + score
        if self.epoch_score[pool][c.epoch][c.contributor] == 0:
            self.epoch_members[pool][c.epoch].append(c.contributor)
        self.epoch_score[pool][c.epoch][c.contributor] += score
        self.epoch_total[pool][c.epoch] += score
        if self.member_score[pool][c.contributor] == 0:
            self.members[pool].append(c.contributor)
        self.member_score[pool][c.contributor] += score
        log Accepted(pool=pool, index=index, position=p.accepted, embedding=embedding)
    self._pay(c.contributor if score > 0 or full else treasury, p.deposit)
    log Scored(pool=pool, index=index, contributor=c.contributor, cid=c.cid, order_id=c.order_id,
               program_root=c.program_root, quality_bps=quality_bps, similarity_bps=similarity_bps, score=score,
               binding=binding)


@external
@view
def score_binding(pool: uint256, index: uint256) -> bytes32:
    """
    @notice What a settled score is bound to: keccak256(abi_encode(chain id, this contract, pool,
            CID, program root, score)); zero before it is scored.
    @param pool The pool.
    @param index The contribution.
    @return The binding.
    """
    c: Contribution = self.items[pool][index]
    if c.state != SCORED:
        return empty(bytes32)
    return keccak256(abi_encode(chain.id, self, pool, c.cid, c.program_root, c.score))


@external
def reject(pool: uint256, index: uint256, reason: String[48]):
    """
    @notice The curator rejects the next contribution without a score (its blob breaks the
            schema or cannot be fetched); a failed score order's refund returns to the budget,
            and the deposit goes to the treasury. Anyone may reject a contribution still
            unscored one epoch after its epoch ended (a curator that stops cannot hold the
            pool's rewards for ever). A delivered score is never rejected: it is settled.
    @param pool The pool.
    @param index The contribution (the next one to settle).
    @param reason Why, for people.
    """
    p: Pool = self.pools[pool]
    assert index == p.next_settled, "datapool: contributions are settled in order: settle the one before first"
    c: Contribution = self.items[pool][index]
    assert c.state == SUBMITTED or c.state == SCORING, "datapool: that contribution is delivered or settled"
    late: bool = block.timestamp >= p.start + (c.epoch + 2) * p.epoch_length
    assert msg.sender == p.curator or late, "datapool: only the curator rejects a contribution before its grace ends"
    if c.state == SCORING:
        back: uint256 = self._recover(c.order_id)
        self.pools[pool].score_budget = p.score_budget + back
    self.items[pool][index].state = REJECTED
    self._advance(pool, index, c.epoch)
    self._pay(treasury, p.deposit)
    log Rejected(pool=pool, index=index, reason=reason)


# payments -----------------------------------------------------------------------------------------

@internal
def _pay(to: address, amount: uint256):
    if amount > 0:
        assert extcall token.transfer(to, amount), "datapool: payment transfer failed"


@external
def pay_epoch(pool: uint256, epoch: uint256):
    """
    @notice Pay an ended epoch whose contributions are all settled (anyone): its reward split by
            score, floor division; the remainder to the owner when nobody contributed in the
            epoch, else to the treasury (the owner's side never gains by zeroing a score).
    @param pool The pool.
    @param epoch The epoch.
    """
    p: Pool = self.pools[pool]
    assert p.owner != empty(address) and epoch < p.epochs, "datapool: no such epoch"
    assert block.timestamp >= p.start + (epoch + 1) * p.epoch_length, "datapool: the epoch has not ended"
    assert self.epoch_pending[pool][epoch] == 0, "datapool: some of the epoch's contributions are not settled yet"
    assert not self.epoch_paid[pool][epoch], "datapool: the epoch is paid already"
    self.epoch_paid[pool][epoch] = True
    total: uint256 = self.epoch_total[pool][epoch]
    paid: uint256 = 0
    if total > 0:
        for who: address in self.epoch_members[pool][epoch]:
            share: uint256 = p.epoch_reward * self.epoch_score[pool][epoch][who] // total
            paid += share
            self._pay(who, share)
            log Paid(pool=pool, contributor=who, amount=share, why=BY_EPOCH, epoch=epoch)
    to: address = treasury
    if self.epoch_count[pool][epoch] == 0:
        to = p.owner
    self._pay(to, p.epoch_reward - paid)
    log EpochPaid(pool=pool, epoch=epoch, total_score=total, reward=p.epoch_reward, remainder=p.epoch_reward - paid,
                  remainder_to=to)


@external
def buy(pool: uint256, amount: uint256, dataset_cid: bytes32):
    """
    @notice Pay for a pool's data (to fine-tune on its accepted items): `amount` is split among
            its contributors by their accepted scores (floor division; the remainder to the owner).
    @param pool The pool.
    @param amount The payment (approve first).
    @param dataset_cid The CID of the dataset bought (the accepted items' lines, in order): a record.
    """
    p: Pool = self.pools[pool]
    assert p.total_score > 0, "datapool: the pool has no accepted item to sell"
    assert amount > 0, "datapool: pay something"
    assert extcall token.transferFrom(msg.sender, self, amount), "datapool: payment transfer failed"
    sale: uint256 = self.sales[pool]
    self.sales[pool] = sale + 1
    paid: uint256 = 0
    for who: address in self.members[pool]:
        share: uint256 = amount * self.member_score[pool][who] // p.total_score
        paid += share
        self._pay(who, share)
        log Paid(pool=pool, contributor=who, amount=share, why=BY_SALE, epoch=sale)
    self._pay(p.owner, amount - paid)
    log Bought(pool=pool, buyer=msg.sender, sale=sale, amount=amount, dataset_cid=dataset_cid, items=p.accepted,
               remainder=amount - paid)


@external
def withdraw_budget(pool: uint256):
    """
    @notice The owner takes back the unspent scoring budget once the epochs are over and every
            contribution is settled.
    @param pool The pool.
    """
    p: Pool = self.pools[pool]
    assert msg.sender == p.owner, "datapool: only the pool's owner withdraws its budget"
    assert block.timestamp >= p.start + p.epochs * p.epoch_length, "datapool: the pool's epochs are not over"
    assert p.next_settled == p.contributions, "datapool: some contributions are not settled yet"
    self.pools[pool].score_budget = 0
    self._pay(p.owner, p.score_budget)


@external
@view
def epoch_of(pool: uint256) -> uint256:
    """
    @notice The pool's current epoch (may be past its last).
    @param pool The pool.
    @return The epoch.
    """
    p: Pool = self.pools[pool]
    return (block.timestamp - p.start) // p.epoch_length
