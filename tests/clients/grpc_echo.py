#!/usr/bin/python3
"""A gRPC echo server and client (grpcio, no generated code), for the mesh's protocol tests.

  grpc_echo.py server PORT     serves weft.test.Echo on 127.0.0.1:PORT until killed
  grpc_echo.py client ADDR     calls it through ADDR and prints one line per check
  grpc_echo.py bench ADDR N    N unary calls, 8 in flight, prints "calls N in S s = R/s"

Methods: Unary (echoes the request), Stream (server streaming: the request 5 times),
Fail (aborts with NOT_FOUND, a message and a trailing metadata entry), Flaky (UNAVAILABLE
the first time a payload is seen, then echoes it: the mesh retries it). It also serves
grpc.health.v1.Health/Check, answering SERVING (the encoded HealthCheckResponse).
"""
import sys
from concurrent import futures

import grpc

SERVICE = "weft.test.Echo"


def unary(request, context):
    context.set_trailing_metadata((("x-weft-trailer", "kept"),))
    return request


def stream(request, context):
    for i in range(5):
        yield request + b"-" + str(i).encode()


def fail(request, context):
    context.set_trailing_metadata((("x-weft-trailer", "kept"),))
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())


SEEN = set()


def flaky(request, context):
    if request not in SEEN:
        SEEN.add(request)
        context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
    return request


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Flaky": grpc.unary_unary_rpc_method_handler(flaky),
    }
    health = {"Check": grpc.unary_unary_rpc_method_handler(lambda request, context: b"\x08\x01")}
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(SERVICE, handlers),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", health),
    ))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


def client(addr):
    with grpc.insecure_channel(addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        unary_call = channel.unary_unary(f"/{SERVICE}/Unary")
        reply, call = unary_call.with_call(b"hello", timeout=10)
        trailers = dict(call.trailing_metadata())
        print(f"unary {reply.decode()} trailer={trailers.get('x-weft-trailer')}")
        replies = list(channel.unary_stream(f"/{SERVICE}/Stream")(b"tick", timeout=10))
        print(f"stream {len(replies)} {replies[-1].decode()}")
        try:
            reply = channel.unary_unary(f"/{SERVICE}/Flaky")(b"retried", timeout=10)
            print(f"flaky {reply.decode()}")
        except grpc.RpcError as e:
            print(f"flaky {e.code().name}")
        try:
            channel.unary_unary(f"/{SERVICE}/Fail")(b"x", timeout=10)
            print("fail no-error")
        except grpc.RpcError as e:
            trailers = dict(e.trailing_metadata() or ())
            print(f"fail {e.code().name} {e.details()} trailer={trailers.get('x-weft-trailer')}")


def bench(addr, count):
    import time
    with grpc.insecure_channel(addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        start = time.monotonic()
        pending = []
        for i in range(count):
            pending.append(call.future(b"x" * 100, timeout=30))
            if len(pending) == 8:
                pending.pop(0).result()
        for f in pending:
            f.result()
        took = time.monotonic() - start
    print(f"calls {count} in {took:.2f} s = {count / took:.0f}/s")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "bench":
        bench(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2])
