"""A real gRPC server and client (grpcio) for tests/e2e/listeners.rs. No protobuf: messages
are raw bytes, which gRPC carries as they are.

    grpc_peer.py serve [CERT KEY]
        Serves /echo.v1.Echo/Unary (answers with the request metadata it received, as
        JSON, and sets the trailing metadata `x-echo-trailer: kept`) and
        /echo.v1.Echo/Fail (answers NOT_FOUND with a trailer). Plain HTTP/2 (h2c), or TLS
        with CERT and KEY. Prints `PORT <n>` once it serves; exits when stdin closes.

    grpc_peer.py call TARGET METHOD [--ca FILE] [--name NAME] [--authority HOST]
                      [--metadata KEY=VALUE]...
        One unary call; prints a JSON object: code (e.g. "OK", "UNAVAILABLE"), details,
        reply (text), initial and trailing metadata. Plain (h2c) without --ca; TLS with the
        CA file, checking the server name NAME. HOST is sent as :authority.
"""

import json
import sys
import threading
from concurrent import futures

import grpc


def serve(cert: str | None, key: str | None) -> None:
    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata((("x-echo-trailer", "kept"),))
        seen = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        return json.dumps({"metadata": seen, "request": request.decode()}).encode()

    def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata((("x-echo-trailer", "kept"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "the upstream has no such thing")

    class Handler(grpc.GenericRpcHandler):
        def service(self, details):
            if details.method == "/echo.v1.Echo/Unary":
                return grpc.unary_unary_rpc_method_handler(unary)
            if details.method == "/echo.v1.Echo/Fail":
                return grpc.unary_unary_rpc_method_handler(fail)
            return None

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((Handler(),))
    if cert:
        with open(cert, "rb") as c, open(key, "rb") as k:
            credentials = grpc.ssl_server_credentials(((k.read(), c.read()),))
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    # Serve until the test closes stdin (or is gone).
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop(0)), daemon=True).start()
    server.wait_for_termination()


def call(target: str, method: str, args: list[str]) -> None:
    ca = name = authority = None
    metadata = []
    while args:
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--ca":
            ca = value
        elif flag == "--name":
            name = value
        elif flag == "--authority":
            authority = value
        elif flag == "--metadata":
            k, _, v = value.partition("=")
            metadata.append((k, v))
        else:
            raise SystemExit(f"unknown flag {flag}")
    options = [("grpc.default_authority", authority)] if authority else []
    if ca:
        with open(ca, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        if name:
            options.append(("grpc.ssl_target_name_override", name))
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    stub = channel.unary_unary(method)
    out = {}
    try:
        reply, rpc = stub.with_call(b"ping", metadata=metadata, timeout=15)
        out = {"code": "OK", "details": "", "reply": reply.decode(),
               "initial": dict(rpc.initial_metadata() or ()),
               "trailing": dict(rpc.trailing_metadata() or ())}
    except grpc.RpcError as error:
        out = {"code": error.code().name, "details": error.details() or "", "reply": None,
               "initial": dict(error.initial_metadata() or ()),
               "trailing": dict(error.trailing_metadata() or ())}
    channel.close()
    print(json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(*(sys.argv[2:4] if len(sys.argv) >= 4 else (None, None)))
    elif sys.argv[1] == "call":
        call(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        raise SystemExit(__doc__)
