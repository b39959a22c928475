"""Attempts one TLS handshake with exactly one protocol version, using Python's ssl
module (OpenSSL), for tests/e2e/listeners.rs.

    tls_version.py HOST PORT CAFILE VERSION     (VERSION: TLSv1_1, TLSv1_2, TLSv1_3)

Prints `ok <negotiated version>` or `refused <reason>`. OpenSSL 3 allows TLS 1.1 only at
security level 0, which the context sets, so that a refusal is the server's.
"""

import socket
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)
import ssl
import sys

host, port, cafile, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.load_verify_locations(cafile)
context.set_ciphers("DEFAULT:@SECLEVEL=0")
wanted = getattr(ssl.TLSVersion, version)
context.minimum_version = wanted
context.maximum_version = wanted
try:
    with socket.create_connection((host, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            print(f"ok {tls.version()}", flush=True)
except (ssl.SSLError, OSError) as error:
    print(f"refused {error}", flush=True)
