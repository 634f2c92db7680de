"""Where the envelope travels: (a) length-prefixed frame in the body vs (b) JSON in an AMQP header.

Part 1 (CPU, no broker): per message, encode = envelope to JSON + AMQP wire frames (method, content
header, body frames, marshalled by pamqp exactly as aiormq does); decode = unmarshal those frames +
envelope from JSON (pydantic). 10 KB message bytes; envelopes with 1 and 500 recipients and three
filter verdicts. Best of 5 repeats, microseconds per message.

Part 2 (broker): the largest envelope each variant can carry. A content header frame cannot be
split, so under (b) the envelope must fit in one frame of the negotiated frame_max (131072 by
default). Shows the recipient count at which (b) stops fitting for several address lengths, then
publishes a 5,000-recipient envelope both ways to a real queue (private vhost) and prints what
happens.

    .venv/bin/python bench/hop/frame_envelope.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable

import aio_pika
import hoplib
import pamqp.frame
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from mailmoat_platform.bus import decode, encode
from mailmoat_platform.models import Envelope

FRAME_MAX = 131072
HEADER = "x-mailmoat-envelope"
NEIGHBOURS = 50


def wire(body: bytes, headers: dict[str, object], message_id: str, frame_max: int = FRAME_MAX) -> bytes:
    """The bytes aiormq writes for one basic.publish (method, content header, body frames)."""
    props = commands.Basic.Properties(
        content_type="application/x-mailmoat-frame", delivery_mode=2, message_id=message_id, headers=headers
    )
    frames: list[object] = [
        commands.Basic.Publish(exchange="", routing_key="mailmoat.b"),
        ContentHeader(body_size=len(body), properties=props),
    ]
    step = frame_max - 8
    frames += [ContentBody(body[i : i + step]) for i in range(0, len(body), step)]
    return b"".join(pamqp.frame.marshal(f, 1) for f in frames)  # type: ignore[arg-type]


def unwire(data: bytes) -> tuple[commands.Basic.Properties, bytes]:
    """Parse the frames of one message back into its properties and body."""
    offset, props, parts = 0, None, []
    while offset < len(data):
        used, _channel, frame = pamqp.frame.unmarshal(data[offset:])
        offset += used
        if isinstance(frame, ContentHeader):
            props = frame.properties
        elif isinstance(frame, ContentBody):
            parts.append(frame.value)
    assert props is not None
    return props, b"".join(parts)


def frame_variant(envelope: Envelope, data: bytes) -> tuple[bytes, Callable[[bytes], tuple[Envelope, bytes]]]:
    def enc() -> bytes:
        return wire(encode(envelope, data), {"x-mailmoat-id": envelope.id}, envelope.id)

    def dec(raw: bytes) -> tuple[Envelope, bytes]:
        _props, body = unwire(raw)
        return decode(body)

    return enc, dec  # type: ignore[return-value]


def header_variant(envelope: Envelope, data: bytes) -> tuple[Callable[[], bytes], Callable[[bytes], tuple]]:
    def enc() -> bytes:
        return wire(data, {"x-mailmoat-id": envelope.id, HEADER: envelope.model_dump_json()}, envelope.id)

    def dec(raw: bytes) -> tuple[Envelope, bytes]:
        props, body = unwire(raw)
        value = props.headers[HEADER]
        return Envelope.model_validate_json(value), body

    return enc, dec


def best_us(fn: Callable[[], object], number: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def part1(size: int) -> None:
    data = hoplib.make_data(size)
    print(f"Part 1: encode + decode per message, {size}-byte message, best of 5 (us)")
    print("| recipients | envelope JSON bytes | variant | encode us | decode us | total us |")
    print("|---:|---:|---|---:|---:|---:|")
    for rcpts in (1, 500):
        envelope = hoplib.make_envelope(rcpts, local_len=12)
        json_len = len(envelope.model_dump_json())
        number = 3000 if rcpts == 1 else 300
        for name, make in (("a: frame in body", frame_variant), ("b: JSON in header", header_variant)):
            enc, dec = make(envelope, data)
            raw = enc()
            got, got_data = dec(raw)
            assert got == envelope and got_data == data
            e = best_us(enc, number)
            d = best_us(lambda dec=dec, raw=raw: dec(raw), number)
            print(f"| {rcpts} | {json_len} | {name} | {e:.1f} | {d:.1f} | {e + d:.1f} |")


def header_frame_len(envelope: Envelope) -> int:
    props = commands.Basic.Properties(
        content_type="application/x-mailmoat-frame", delivery_mode=2, message_id=envelope.id,
        headers={"x-mailmoat-id": envelope.id, HEADER: envelope.model_dump_json()},
    )
    return len(pamqp.frame.marshal(ContentHeader(body_size=1, properties=props), 1))


def max_recipients(local_len: int) -> int:
    """Largest recipient count whose envelope still fits one content header frame (bisection)."""
    lo, hi = 1, 20000
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if header_frame_len(hoplib.make_envelope(mid, local_len=local_len)) <= FRAME_MAX:
            lo = mid
        else:
            hi = mid - 1
    return lo


async def publish_big(url: str, rcpts: int, local_len: int) -> None:
    envelope = hoplib.make_envelope(rcpts, local_len=local_len)
    data = hoplib.make_data(10240)
    addr = len(envelope.rcpt_to[0])
    print(f"\nPart 2b: one envelope of {rcpts} recipients of {addr} characters "
          f"(JSON {len(envelope.model_dump_json())} bytes; header frame {header_frame_len(envelope)} bytes; "
          f"frame_max {FRAME_MAX})")
    for variant in ("a", "b"):
        connection = await aio_pika.connect(url, timeout=10)
        try:
            channel = await connection.channel(publisher_confirms=True)
            queue = await channel.declare_queue(f"mailmoat.big-{variant}", durable=True,
                                                arguments={"x-queue-type": "quorum"})
            await channel.declare_queue(f"mailmoat.small-{variant}", durable=True, arguments={"x-queue-type": "quorum"})
            if variant == "a":
                message = aio_pika.Message(encode(envelope, data), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                           message_id=envelope.id)
            else:
                message = aio_pika.Message(data, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                           message_id=envelope.id, headers={HEADER: envelope.model_dump_json()})
            small = [aio_pika.Message(encode(hoplib.make_envelope(), data),
                                      delivery_mode=aio_pika.DeliveryMode.PERSISTENT) for _ in range(NEIGHBOURS)]
            started = time.monotonic()
            results = await asyncio.gather(
                channel.default_exchange.publish(message, routing_key=queue.name, timeout=10),
                *(channel.default_exchange.publish(m, routing_key=f"mailmoat.small-{variant}", timeout=10)
                  for m in small),
                return_exceptions=True,
            )
            took = time.monotonic() - started
            big = results[0]
            outcome = (f"raised {type(big).__name__}: {big!s:.200}" if isinstance(big, BaseException)
                       else f"confirmed ({type(big).__name__})")
            failed = sum(isinstance(r, BaseException) for r in results[1:])
            await asyncio.sleep(0.5)
            state = "closed" if connection.is_closed or channel.is_closed else "open"
            print(f"  ({variant}) big publish: {outcome} after {took:.2f}s")
            print(f"  ({variant}) {NEIGHBOURS} normal publishes in flight on the same connection: {failed} failed; "
                  f"channel/connection afterwards: {state}")
        finally:
            await connection.close()
        check = await aio_pika.connect(url, timeout=10)
        try:
            channel = await check.channel()
            queue = await channel.declare_queue(f"mailmoat.big-{variant}", passive=True)
            got = await queue.get(no_ack=True, fail=False, timeout=10)
            if got is None:
                print(f"  ({variant}) queue: empty")
            elif variant == "a":
                env, body = decode(got.body)
                print(f"  ({variant}) queue: 1 message, decoded {len(env.rcpt_to)} recipients, bytes equal: "
                      f"{body == data}")
            else:
                env = Envelope.model_validate_json(got.headers[HEADER])
                print(f"  ({variant}) queue: 1 message, decoded {len(env.rcpt_to)} recipients")
        finally:
            await check.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--big-recipients", type=int, default=5000)
    parser.add_argument("--big-local-len", type=int, default=64)
    parser.add_argument("--skip-broker", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.big_recipients <= 20000:
        parser.error("--big-recipients must be 1..20000")
    part1(args.size)
    print(f"\nPart 2a: most recipients whose envelope fits one content header frame (frame_max {FRAME_MAX})")
    print("| address length (chars) | max recipients under (b) | under (a) |")
    print("|---:|---:|---|")
    for local in (8, 20, 64, 242):
        addr = len(hoplib.make_envelope(1, local_len=local).rcpt_to[0])
        print(f"| {addr} | {max_recipients(local)} | no limit from the frame (body frames are split) |")
    if not args.skip_broker:
        with hoplib.private_vhost("mailmoat-hop-frame") as vhost:
            asyncio.run(publish_big(hoplib.amqp_url(vhost), args.big_recipients, args.big_local_len))
    return 0


if __name__ == "__main__":
    sys.exit(main())
