#!/usr/bin/python3
"""A WebSocket echo server and client (Python `websockets`), for the mesh's upgrade test.

  ws_echo.py server PORT            echoes every message on 127.0.0.1:PORT until killed
  ws_echo.py client ADDR COUNT      sends COUNT messages through ADDR, prints "echoed N of COUNT"
                                    and the round trips per second
"""
import asyncio
import sys
import time

import websockets


async def echo(ws, *_):
    async for message in ws:
        await ws.send(message)


async def serve(port):
    async with websockets.serve(echo, "127.0.0.1", port):
        print("serving", flush=True)
        await asyncio.Future()


async def client(addr, count):
    echoed = 0
    start = time.monotonic()
    async with websockets.connect(f"ws://{addr}/echo", open_timeout=10) as ws:
        for i in range(count):
            message = f"message {i} " + "x" * (i % 200)
            await ws.send(message)
            if await asyncio.wait_for(ws.recv(), 10) == message:
                echoed += 1
    took = time.monotonic() - start
    print(f"echoed {echoed} of {count} in {took:.2f} s = {count / took:.0f}/s")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(serve(int(sys.argv[2])))
    else:
        asyncio.run(client(sys.argv[2], int(sys.argv[3])))
