#!/usr/bin/env python3
"""tollgate side by side with nginx and HAProxy, on one machine, in one run.

    python3 benches/load.py                      # the comparison (connections 16,64,256; 10 s each)
    python3 benches/load.py --quick              # smoke run: 64 connections, 3 s
    python3 benches/load.py --expiry-storm       # tokens expiring every 4 s under steady load
    python3 benches/load.py --instructions       # instructions per request, under callgrind
    python3 benches/load.py --footprint          # RSS idle, under load and after; what it is

What it does (everything on loopback, every process it starts is stopped at the end, also
on Ctrl-C or an error):

* Installs what is missing: nginx-light, haproxy and wrk from Debian's packages (as root,
  else through sudo), and runs `bash .ci/deps` (cmake) before building tollgate with
  `cargo build --release --bin tollgate` (skipped with --binary PATH).
* Starts the upstream: nginx with one worker answering `200 ok` from memory, plus a token
  endpoint (POST /oauth/token) for the oauth2 case and /echo-auth, which answers with the
  Authorization header it got; and, on a second listener, the same over TLS for the TLS
  upstream rows. Each proxy is checked through /echo-auth before it is loaded.
* Then, one after another, each with one worker/thread and no access log, in front of that
  upstream, each injecting `Authorization: Bearer <token>`:
    direct           the client straight at a fresh nginx with the upstream's config (the limit)
    nginx            worker_processes 1, proxy_set_header, upstream keepalive 1024
    haproxy          nbthread 1, http-request set-header, http-reuse always
    pingora-bare     the floor: a pingora proxy that only injects the header (one thread,
                     mimalloc, tollgate's release profile; benches/bare_pingora.rs)
    tollgate-static  server.threads 1, a `static` provider
    tollgate-oauth2  server.threads 1, an `oauth2` provider (client_credentials) whose token
                     is cached: the cache-hit path
    nginx-tls        nginx, terminating TLS (1.2 and 1.3) on its listener
    tollgate-tls     tollgate-static, terminating TLS on its listener
    nginx-tls-upstream
                     nginx, proxying to the upstream's TLS listener: proxy_ssl_verify on
                     against the bench CA, proxy_ssl_session_reuse on, keepalive as nginx
    tollgate-tls-upstream
                     tollgate-static, its route's upstream https:// to that listener,
                     trusting the bench CA (upstream.tls.ca_file)
  Every TLS listener serves one certificate (ECDSA P-256, for 127.0.0.1 and localhost,
  issued by a bench CA; both made with openssl at the start). The two TLS servers are
  loaded over HTTPS with keep-alive: each connection's handshake happens once, so the rows
  compare TLS record processing, not handshakes. Their ratios are against nginx-tls, and a
  closing line gives tollgate-tls against nginx-tls. The two TLS upstream rows are loaded
  over plain HTTP and keep their upstream connections (TLS 1.2 or 1.3) in a pool, so they
  compare TLS on the upstream leg; their ratios are against nginx-tls-upstream, and a
  closing line gives tollgate-tls-upstream against it. The upstream's TLS listener adds an
  X-Upstream-TLS header (protocol and cipher) to /echo-auth, which the check before load
  requires of those two rows and refuses from all others: a row that reached the upstream
  the wrong way fails instead of being measured.
  tollgate runs with its defaults except RUST_LOG (--tollgate-log-level, default warn: no
  access lines) and JSON logs written to a file.
* Loads each with wrk (1 thread, --latency): a 2 s warm-up, then the measured run, for every
  connection count. Each server is started fresh for each connection count, so its idle
  and peak RSS belong to that run alone.
* With 2+ CPUs and taskset (--pin, the default there), the measured server runs on CPU 0
  and wrk plus the shared upstream on CPU 1, so the client does not steal the proxy's core.
* Reports one table per connection count, a row per server: requests/s, p50 and p99
  latency (wrk), the server's CPU time per request (utime+stime of its whole process tree
  from /proc/PID/stat, before and after the measured run, divided by the requests
  completed), peak RSS (VmHWM) summed over its processes, each also as a ratio to nginx;
  then "core busy" (the server's CPU time / wall time: near 100% means it was CPU-bound),
  "CPU0/1 busy" (the machine's CPUs, whoever ran there: CPU 1 at 100% means the client and
  upstream were the limit), idle RSS (VmRSS before load), "upstream conns" (connections
  the upstream accepted during the run: pooling at work) and wrk's non-2xx responses and
  socket errors (which should be 0). A row marked * shared its core with other work on
  the machine; a note follows a table when a server opened a new upstream connection for
  more than 1% of its requests (nginx would at 256 connections with a keepalive of 64;
  --nginx-keepalive sets it, 1024 by default). All raw figures go to JSON (--json, default target/bench/load-<commit>-<time>.json)
  with the commit (and whether the tree was dirty), date, load average, machine and the
  versions of nginx, HAProxy, wrk and tollgate, including the upstream's and wrk's CPU per
  request.

* Then the same-load table: every server again at 64 connections (--same-load-connections),
  each connection pausing so the whole load is about 10,000 requests/s
  (--same-load-rps; 0 skips it). The saturating runs compare capacity and CPU at full load;
  this one compares latency and CPU per request at one moderate rate, the same for all.

--expiry-storm: tollgate with an oauth2 provider whose token endpoint (a small Python
server inside this script, counting calls) issues tokens with `expires_in:
--storm-expires-in` (4 s) and `refresh: {before_expiry: --storm-before-expiry}` (0.5 s), loaded
by wrk for --storm-duration (20 s) at --storm-connections (64). A probe thread sends one
request every 10 ms beside wrk, so the latency of requests that arrive while a token call
is in flight (each call takes --token-delay, 0.1 s) can be told apart. Reports provider
calls per token lifetime two ways (the calls that started within each token's own lifetime,
which should be exactly one, its renewal; and calls / (duration / lifetime), which renewing
ahead makes lifetime / (lifetime - lead)), calls that overlapped, the intervals between calls,
failed requests (wrk's non-2xx and errors, and the probe's) and the p99 latency.
JSON: target/bench/storm-<commit>-<time>.json.

--instructions: every server of --servers but direct runs under valgrind's callgrind
(installed from Debian's `valgrind` when missing; the upstream runs outside it), loaded by
wrk at --instr-connections (16) for --instr-duration (8 s) after a 2 s warm-up; callgrind is
zeroed before and dumped after the measured run. Reports instructions per request for the
whole process (ratios against the same peer as in the comparison), the share in
memcpy/memmove, and, for tollgate, the inclusive instructions of each ProxyHttp phase it
implements (its own request handling). Instruction counts do not drift with the machine's
load as CPU time does, so they compare commits exactly. JSON:
target/bench/instructions-<commit>-<time>.json; each server's callgrind dump:
target/bench/callgrind-<commit>-<server>.out (read it with callgrind_annotate).

--footprint: memory, for nginx (the comparison's proxy, for reference) and tollgate-static
scaled to --footprint-providers (10) static providers and --footprint-routes (100) routes
(threads 1; route rN at /rN/ with provider pN%10's token; r0 strips its prefix, so the check
before load goes through /r0/echo-auth and the load through /r0/). Each server is started
fresh (pinned) for each of --connections (default here 64,256) and checked; 7 s later (tollgate
lets go of its start-up code 5 s after start) its idle
RSS is read (VmRSS, RssAnon, RssFile, Threads from /proc/PID/status) and parted by
/proc/PID/smaps: the binary's and the libraries' file pages, the pages written in their
mappings (data), [heap], thread stacks (found by each thread's stack pointer and by the
guard page below), the other anonymous mappings (the allocator's), shared memory, with the
transparent huge pages among them. Then the comparison's warm-up and measured run (so the
peak, VmHWM, is the comparison's peak RSS), sampling VmRSS every 0.2 s and the parts half way
through; then VmRSS right after wrk exits and each second for 10 s (tollgate returns freed
memory to the OS every 5 s). Reports one table (idle RSS, anon/file, threads; per connection
count the peak, RSS right after and 10 s after; tollgate's ratios to nginx), what each MB is
(idle, half way through the largest run, 10 s after it), the growth per connection, and the
issue's targets (idle at most 16 MB, at most 40 MB at 256 connections). RSS is summed over a
server's processes, as in the comparison. JSON: target/bench/footprint-<commit>-<time>.json.

Options (see --help): --connections, --duration, --warmup, --rounds (repeat the whole
sequence, report medians), --servers (a subset), --binary, --json, --pin/--no-pin,
--tollgate-log-level, --nginx-keepalive, --quick, --footprint-providers, --footprint-routes.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import http.server
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).resolve().parent / "load"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVERS = ["direct", "nginx", "haproxy", "pingora-bare", "tollgate-static", "tollgate-oauth2",
           "nginx-tls", "tollgate-tls", "nginx-tls-upstream", "tollgate-tls-upstream"]
# Servers loaded over HTTPS (they terminate TLS); their ratios are against nginx-tls.
TLS_SERVERS = {"nginx-tls", "tollgate-tls"}
# Servers loaded over plain HTTP that reach the upstream over HTTPS, at its TLS listener;
# their ratios are against nginx-tls-upstream.
TLS_UPSTREAM_SERVERS = {"nginx-tls-upstream", "tollgate-tls-upstream"}
# The pairs a closing line compares: (title, ours, theirs).
PAIRS = [("HTTPS, tollgate-tls against nginx-tls (same certificate, keep-alive)",
          "tollgate-tls", "nginx-tls"),
         ("TLS upstream, tollgate-tls-upstream against nginx-tls-upstream (plain HTTP in, "
          "HTTPS to the upstream with its certificate verified, pooled connections)",
          "tollgate-tls-upstream", "nginx-tls-upstream")]
# Set by the upstream's TLS listener on /echo-auth only: proof that a proxy reached it over
# TLS (a proxy sending plain HTTP to that port gets a 400, one that went to the plain port
# gets no such header). `/` answers as on the plain listener, so the loaded responses are
# the same bytes for every row.
UPSTREAM_TLS_HEADER = "X-Upstream-TLS"
STATIC_TOKEN = "static-token"

# Templates held here rather than in benches/load/; render() looks here first.
INLINE_TEMPLATES = {
    # The shared upstream's TLS listener, added to nginx-upstream.conf's http block (the
    # `direct` row, a copy of the upstream, goes without it).
    "nginx-upstream-tls-server.conf": """
    # The TLS listener of the TLS upstream rows: the bench certificate (for 127.0.0.1 and
    # localhost), TLS 1.2 and 1.3. Session tickets are on by default, for
    # proxy_ssl_session_reuse.
    server {
        listen 127.0.0.1:{{tls_port}} ssl;
        ssl_certificate {{cert}};
        ssl_certificate_key {{key}};
        ssl_protocols TLSv1.2 TLSv1.3;

        location /echo-auth {
            default_type text/plain;
            add_header """ + UPSTREAM_TLS_HEADER + """ "$ssl_protocol $ssl_cipher" always;
            return 200 "$http_authorization";
        }

        location / {
            default_type text/plain;
            return 200 "ok";
        }
    }
""",
    "nginx-proxy-tls-upstream.conf": """\
# nginx as the TLS upstream peer: nginx-proxy.conf (plain HTTP in, the same keep-alive pool),
# but to the upstream's TLS listener, verifying its certificate against the bench CA, with
# TLS sessions reused. Rendered by benches/load.py; not for use on its own.
worker_processes 1;
daemon off;
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log warn;
worker_rlimit_nofile 10000;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path {{dir}}/client_body;
    proxy_temp_path {{dir}}/proxy;
    keepalive_requests 1000000;
    keepalive_timeout 300s;

    upstream bench_upstream_tls {
        server 127.0.0.1:{{upstream_tls_port}};
        keepalive {{keepalive}};
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }

    server {
        listen 127.0.0.1:{{port}};

        location / {
            proxy_pass https://bench_upstream_tls;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer static-token";
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {{ca}};
            # nginx matches the name against the certificate's DNS names only (not its IP
            # address), so `localhost`, which the certificate names beside 127.0.0.1. No
            # SNI (proxy_ssl_server_name off), as tollgate sends none to an IP address.
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
        }
    }
}
""",
    "tollgate-tls-upstream.yaml": """\
# tollgate-static, its route's upstream the upstream's TLS listener, whose certificate is
# verified against the bench CA. Rendered by benches/load.py.
server:
  listen: ["127.0.0.1:{{port}}"]
  admin: "127.0.0.1:{{admin_port}}"
  threads: 1

providers:
  bench:
    type: static
    value: static-token

routes:
  - name: bench
    match: { path_prefix: / }
    upstream: { url: "https://127.0.0.1:{{upstream_tls_port}}", tls: { ca_file: "{{ca}}" } }
    credential: { provider: bench, header: Authorization, format: "Bearer {token}" }
""",
}


def log(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --- processes -----------------------------------------------------------------------------


class Processes:
    """Every process this script starts, each in its own session (process group = its pid),
    so stopping one stops exactly what it forked and nothing else."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []
        self.stop_signal: dict[int, int] = {}

    def start(self, argv: list[str], cpu: int | None, log_path: Path | None = None,
              env: dict | None = None, stdout=None,
              stop_signal: int = signal.SIGTERM) -> subprocess.Popen:
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + argv
        out = stdout
        if out is None:
            out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            if stdout is None and log_path:
                out.close()
        self.running.append(proc)
        self.stop_signal[proc.pid] = stop_signal
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 5.0) -> None:
        """Its stop signal (SIGTERM; SIGINT for tollgate, which pingora takes as a fast
        shutdown) to the process's group, SIGKILL after `grace`; then SIGKILL to whatever
        is left in that group (an nginx worker, say). A process already reaped is only
        forgotten: its pid may belong to someone else by now."""
        if proc.returncode is None and proc.poll() is None:
            first = self.stop_signal.get(proc.pid, signal.SIGTERM)
            for sig, wait in ((first, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if proc in self.running:
            self.running.remove(proc)
            self.stop_signal.pop(proc.pid, None)

    def stop_all(self) -> None:
        for proc in list(reversed(self.running)):
            self.stop(proc, grace=2.0)


PROCS = Processes()


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


# --- small helpers ---------------------------------------------------------------------------


def fill(template: str, **values) -> str:
    """The template (INLINE_TEMPLATES' or benches/load/'s) with its {{key}}s filled in."""
    if template in INLINE_TEMPLATES:
        text = INLINE_TEMPLATES[template]
    else:
        text = (TEMPLATES / template).read_text()

    def sub(match):
        key = match.group(1)
        if key not in values:
            raise BenchError(f"{template}: no value for {{{{{key}}}}}")
        return str(values[key])

    return re.sub(r"\{\{(\w+)\}\}", sub, text)


def render(template: str, out: Path, **values) -> Path:
    out.write_text(fill(template, **values))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_exchange(port: int, path: str, method: str = "GET", body: bytes | None = None,
                  headers: dict | None = None, timeout: float = 3.0,
                  tls: ssl.SSLContext | None = None) -> tuple[int, http.client.HTTPMessage,
                                                              bytes]:
    """One request; the response's status, headers and body."""
    if tls is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def http_call(port: int, path: str, **options) -> tuple[int, bytes]:
    status, _, body = http_exchange(port, path, **options)
    return status, body


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None,
             log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what}: the process exited ({proc.returncode})" + tail(log_path))
        try:
            if check():
                return
        except OSError as error:
            last = error
        time.sleep(0.05)
    raise BenchError(f"{what}: not ready after {timeout:.0f} s ({last})" + tail(log_path))


def tail(path: Path | None, lines: int = 15) -> str:
    if not path or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n  " + "\n  ".join(text) if text else ""


def tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total


def mem_kb(pids: list[int], field: str) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def server_pids(proc: subprocess.Popen) -> list[int]:
    """The measured processes: the tree under the started process (taskset execs, so the
    pid is the server's own)."""
    return tree(proc.pid)


CPU_FIELDS = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]


def cpu_jiffies() -> dict[int, list[int]]:
    """Per CPU, from /proc/stat: jiffies since boot in each of CPU_FIELDS."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            out[int(name[3:])] = [int(v) for v in fields[:len(CPU_FIELDS)]]
    return out


def cpu_split(before: dict, after: dict) -> dict[int, dict[str, float]]:
    """Per CPU, the share of the interval spent in each of CPU_FIELDS, and `busy` (all but
    idle and iowait; steal included: time the CPU was not ours)."""
    out = {}
    for cpu in after:
        if cpu not in before:
            continue
        delta = [a - b for a, b in zip(after[cpu], before[cpu])]
        total = max(sum(delta), 1)
        shares = {name: d / total for name, d in zip(CPU_FIELDS, delta)}
        shares["busy"] = 1 - shares["idle"] - shares["iowait"]
        out[cpu] = shares
    return out


def nginx_status(port: int) -> dict:
    """stub_status of the upstream: connections accepted and requests served so far."""
    _, body = http_call(port, "/nginx-status")
    numbers = re.search(rb"\n\s*(\d+)\s+(\d+)\s+(\d+)", body)
    if not numbers:
        raise BenchError(f"upstream /nginx-status: {body[:200]!r}")
    accepts, _, requests = (int(n) for n in numbers.groups())
    return {"accepts": accepts, "requests": requests}


def command_output(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    return (result.stdout + result.stderr).strip()


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


# --- setup -----------------------------------------------------------------------------------


def ensure_tools(args) -> None:
    wanted = {"nginx": "nginx-light", "haproxy": "haproxy", "wrk": "wrk", "openssl": "openssl"}
    if args.instructions:
        wanted.update({"valgrind": "valgrind", "callgrind_control": "valgrind"})
    missing = sorted({pkg for cmd, pkg in wanted.items() if not shutil.which(cmd)})
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else (["sudo"] if shutil.which("sudo") else None)
    if sudo is None or not shutil.which("apt-get"):
        raise BenchError(f"missing {', '.join(missing)}: install them (Debian packages: "
                         f"{' '.join(missing)})")
    log(f"installing {' '.join(missing)} (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    for cmd in wanted:
        if not shutil.which(cmd):
            raise BenchError(f"{cmd} is still missing after apt-get install")


def build_tollgate(args) -> Path:
    """tollgate, and (when it is among the servers) the bare pingora proxy beside it."""
    if args.binary:
        binary = Path(args.binary).resolve()
        if not os.access(binary, os.X_OK):
            raise BenchError(f"--binary {binary}: not an executable file")
        if "pingora-bare" in args.servers and not os.access(bare_binary(binary), os.X_OK):
            raise BenchError(f"no {bare_binary(binary)} beside --binary: build it with cargo "
                             f"build --release --features bench-bare --bin bare-pingora, or "
                             f"leave pingora-bare out of --servers")
        return binary
    subprocess.run(["bash", ".ci/deps"], cwd=ROOT, check=True)
    log("building tollgate: cargo build --release --bin tollgate")
    subprocess.run(["cargo", "build", "--release", "--bin", "tollgate"], cwd=ROOT, check=True)
    if "pingora-bare" in args.servers:
        log("building the bare pingora proxy: cargo build --release --features bench-bare "
            "--bin bare-pingora")
        subprocess.run(["cargo", "build", "--release", "--features", "bench-bare", "--bin",
                        "bare-pingora"], cwd=ROOT, check=True)
    return ROOT / "target" / "release" / "tollgate"


def make_certificate(workdir: Path) -> tuple[Path, Path, Path, ssl.SSLContext]:
    """A bench CA and an ECDSA P-256 server certificate it issued, for 127.0.0.1 and
    localhost, which every TLS listener serves (the TLS servers' and the upstream's); and a
    client context that trusts the CA. A CA and a leaf, not one self-signed certificate:
    rustls (tollgate's upstream leg) refuses a CA certificate as a server's, and openssl
    marks a self-signed one CA:TRUE. localhost is for nginx's proxy_ssl_verify, which
    matches DNS names only; tollgate verifies 127.0.0.1."""
    ca, ca_key = workdir / "ca.crt", workdir / "ca.key"
    cert, key = workdir / "tls.crt", workdir / "tls.key"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"]
    subprocess.run(["openssl", "req", "-x509", *ec, "-subj", "/CN=tollgate-bench CA",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout", str(ca_key), "-out", str(ca)],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-x509", "-CA", str(ca), "-CAkey", str(ca_key), *ec,
                    "-subj", "/CN=tollgate-bench",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-addext", "basicConstraints=critical,CA:FALSE",
                    "-addext", "keyUsage=critical,digitalSignature",
                    "-addext", "extendedKeyUsage=serverAuth",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    os.chmod(key, 0o644)  # nginx's worker reads it after dropping privileges
    context = ssl.create_default_context(cafile=str(ca))
    return ca, cert, key, context


def bare_binary(tollgate: Path) -> Path:
    return tollgate.parent / "bare-pingora"


def machine_info() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpus_allowed": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "cpu_model": model,
        "python": platform.python_version(),
    }


def versions(binary: Path) -> dict:
    return {
        "nginx": command_output(["nginx", "-v"]).removeprefix("nginx version: "),
        "haproxy": command_output(["haproxy", "-v"]).splitlines()[0],
        "wrk": command_output(["wrk", "-v"]).splitlines()[0],
        "tollgate": command_output([str(binary), "--version"]),
    }


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, 1 << 20), hard))


# --- the servers -----------------------------------------------------------------------------


class Bench:
    def __init__(self, args, binary: Path, workdir: Path) -> None:
        self.args = args
        self.binary = binary
        self.workdir = workdir
        self.pin = args.pin
        self.server_cpu = 0 if self.pin else None
        self.client_cpu = 1 if self.pin else None
        self.bench_token = f"bench-token-{secrets.token_hex(8)}"
        self.upstream_port = 0
        self.upstream_tls_port = 0  # the upstream's TLS listener, for the TLS upstream rows
        self.upstream: subprocess.Popen | None = None
        # --instructions: the measured server runs under this (callgrind), the upstream not
        self.wrap: list[str] = []
        self.ready_timeout = 10.0
        # The bench CA, the TLS listeners' certificate and key, and a client context that
        # trusts the CA.
        self.ca, self.cert, self.key, self.client_tls = make_certificate(workdir)

    # nginx, with the upstream's config or the proxy's

    def start_nginx(self, name: str, template: str, cpu: int | None, measured: bool = True,
                    tls: bool = False, extra_server: str | None = None, **values):
        """nginx with `template`, plus the server block of the template `extra_server` (filled
        with the same values) in its http block."""
        d = self.workdir / name
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o755)
        port = free_port()
        conf = render(template, d / "nginx.conf", dir=d, port=port, **values)
        if extra_server:
            text = conf.read_text().rstrip()
            if not text.endswith("}"):
                raise BenchError(f"{template}: does not end with its http block's `}}`")
            conf.write_text(text[:-1] + fill(extra_server, dir=d, port=port, **values) + "}\n")
        errlog = d / "error.log"
        argv = ["nginx", "-p", str(d), "-c", str(conf), "-e", str(errlog)]
        wrap = self.wrap if measured else []
        if wrap:
            # One process, so the instruments see the worker itself.
            argv += ["-g", "master_process off;"]
        proc = PROCS.start(wrap + argv, cpu, log_path=d / "stdout.log")

        def up():
            status, _ = http_call(port, "/echo-auth", timeout=1,
                                  tls=self.client_tls if tls else None)
            return status == 200

        wait_for(up, self.ready_timeout if measured else 10, name, proc, errlog)
        return proc, port

    def start_upstream(self) -> None:
        self.upstream_tls_port = free_port()
        self.upstream, self.upstream_port = self.start_nginx(
            "upstream", "nginx-upstream.conf", self.client_cpu, measured=False,
            extra_server="nginx-upstream-tls-server.conf", token=self.bench_token,
            tls_port=self.upstream_tls_port, cert=self.cert, key=self.key)
        # Both listeners are bound before nginx answers on the first; this checks that the
        # TLS one answers with the bench certificate and sets the header verify() requires.
        status, headers, body = http_exchange(self.upstream_tls_port, "/echo-auth",
                                              headers={"Authorization": "probe"},
                                              tls=self.client_tls)
        if status != 200 or body != b"probe" or not headers.get(UPSTREAM_TLS_HEADER):
            raise BenchError(f"upstream TLS listener: /echo-auth answered {status} "
                             f"{body[:100]!r} with {UPSTREAM_TLS_HEADER} "
                             f"{headers.get(UPSTREAM_TLS_HEADER)!r}")
        log(f"upstream nginx on 127.0.0.1:{self.upstream_port}, TLS on "
            f"127.0.0.1:{self.upstream_tls_port} ({headers[UPSTREAM_TLS_HEADER]})")

    def start_server(self, name: str):
        """Starts one measured server; returns (proc, port, expected Authorization)."""
        cpu = self.server_cpu
        if name == "direct":
            proc, port = self.start_nginx("direct", "nginx-upstream.conf", cpu,
                                          token=self.bench_token)
            return proc, port, ""
        if name == "nginx":
            proc, port = self.start_nginx("nginx", "nginx-proxy.conf", cpu,
                                          upstream_port=self.upstream_port,
                                          keepalive=self.args.nginx_keepalive)
            return proc, port, f"Bearer {STATIC_TOKEN}"
        if name == "nginx-tls":
            proc, port = self.start_nginx("nginx-tls", "nginx-proxy-tls.conf", cpu, tls=True,
                                          upstream_port=self.upstream_port,
                                          keepalive=self.args.nginx_keepalive,
                                          cert=self.cert, key=self.key)
            return proc, port, f"Bearer {STATIC_TOKEN}"
        if name == "nginx-tls-upstream":
            proc, port = self.start_nginx(name, "nginx-proxy-tls-upstream.conf", cpu,
                                          upstream_tls_port=self.upstream_tls_port,
                                          keepalive=self.args.nginx_keepalive, ca=self.ca)
            return proc, port, f"Bearer {STATIC_TOKEN}"
        if name == "haproxy":
            d = self.workdir / "haproxy"
            d.mkdir(exist_ok=True)
            port = free_port()
            cfg = render("haproxy.cfg", d / "haproxy.cfg", port=port,
                         upstream_port=self.upstream_port)
            check = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)],
                                   capture_output=True, text=True)
            if check.returncode != 0:
                raise BenchError(f"haproxy -c: {check.stdout}{check.stderr}")
            logf = d / "haproxy.log"
            proc = PROCS.start(self.wrap + ["haproxy", "-db", "-f", str(cfg)], cpu,
                               log_path=logf)
            wait_for(lambda: http_call(port, "/echo-auth", timeout=1)[0] == 200,
                     self.ready_timeout, "haproxy", proc, logf)
            return proc, port, f"Bearer {STATIC_TOKEN}"
        if name == "pingora-bare":
            d = self.workdir / name
            d.mkdir(exist_ok=True)
            port = free_port()
            logf = d / "bare.log"
            proc = PROCS.start(self.wrap + [str(bare_binary(self.binary)), f"127.0.0.1:{port}",
                                            f"127.0.0.1:{self.upstream_port}"],
                               cpu, log_path=logf, stop_signal=signal.SIGINT)
            wait_for(lambda: http_call(port, "/echo-auth", timeout=1)[0] == 200,
                     self.ready_timeout, name, proc, logf)
            return proc, port, f"Bearer {STATIC_TOKEN}"
        if name in ("tollgate-static", "tollgate-oauth2", "tollgate-tls"):
            kind = name.split("-")[1]
            proc, port = self.start_tollgate(name, f"tollgate-{kind}.yaml",
                                             token_port=self.upstream_port,
                                             before_expiry="60s", cert=self.cert,
                                             key=self.key)
            expected = self.bench_token if kind == "oauth2" else STATIC_TOKEN
            return proc, port, f"Bearer {expected}"
        if name == "tollgate-tls-upstream":
            proc, port = self.start_tollgate(name, "tollgate-tls-upstream.yaml",
                                             upstream_tls_port=self.upstream_tls_port,
                                             ca=self.ca)
            return proc, port, f"Bearer {STATIC_TOKEN}"
        raise BenchError(f"unknown server {name}")

    def start_tollgate(self, name: str, template: str, **values):
        d = self.workdir / name
        d.mkdir(exist_ok=True)
        port, admin = free_port(), free_port()
        cfg = render(template, d / "tollgate.yaml", port=port, admin_port=admin,
                     upstream_port=self.upstream_port, **values)
        check = subprocess.run([str(self.binary), "check", "--config", str(cfg)],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise BenchError(f"tollgate check {cfg}:\n{check.stdout}{check.stderr}")
        env = dict(os.environ, RUST_LOG=self.args.tollgate_log_level)
        logf = d / "tollgate.log"
        proc = PROCS.start(self.wrap + [str(self.binary), "--log-format", "json", "run",
                                        "--config", str(cfg)],
                           self.server_cpu, log_path=logf, env=env, stop_signal=signal.SIGINT)
        wait_for(lambda: http_call(admin, "/readyz", timeout=1)[0] == 200,
                 max(20.0, self.ready_timeout), f"{name} /readyz", proc, logf)
        return proc, port

    def verify(self, name: str, port: int, expected: str, prefix: str = "") -> str:
        """Checks what the upstream got through the server; returns the TLS version and
        cipher of its upstream leg ("" when plain). A TLS upstream row must have reached the
        upstream's TLS listener and every other row its plain one, told apart by the header
        only the TLS listener's /echo-auth sets: a misconfigured row fails here rather than
        measure the other leg. `prefix` goes before both paths checked (/echo-auth and /),
        for a route that strips it (--footprint's /r0/)."""
        tls = self.client_tls if name in TLS_SERVERS else None
        status, headers, body = http_exchange(port, f"{prefix}/echo-auth", tls=tls)
        got = body.decode(errors="replace")
        if status != 200 or got != expected:
            raise BenchError(f"{name}: {prefix}/echo-auth answered {status} {got!r}, "
                             f"expected 200 {expected!r}")
        upstream_tls = headers.get(UPSTREAM_TLS_HEADER, "")
        if name in TLS_UPSTREAM_SERVERS and not upstream_tls.startswith("TLSv1."):
            raise BenchError(f"{name}: /echo-auth did not come from the upstream's TLS "
                             f"listener (no {UPSTREAM_TLS_HEADER} in the response)")
        if name not in TLS_UPSTREAM_SERVERS and upstream_tls:
            raise BenchError(f"{name}: /echo-auth came from the upstream's TLS listener "
                             f"({UPSTREAM_TLS_HEADER}: {upstream_tls}), not the plain one")
        status, body = http_call(port, f"{prefix}/", tls=tls)
        if status != 200 or body != b"ok":
            raise BenchError(f"{name}: {prefix}/ answered {status} {body[:200]!r}")
        return upstream_tls

    # the client

    def wrk(self, port: int, connections: int, duration: float, path: str = "/",
            pace_ms: int = 0, scheme: str = "http") -> dict:
        out_path = self.workdir / "wrk.out"
        with open(out_path, "wb") as out:
            argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s",
                    "--latency", "-s", str(TEMPLATES / "report.lua"),
                    f"{scheme}://127.0.0.1:{port}{path}"]
            env = dict(os.environ, WRK_PACE_MS=str(pace_ms))
            proc = PROCS.start(argv, self.client_cpu, stdout=out, env=env)
            killer = threading.Timer(duration + 30, os.killpg, (proc.pid, signal.SIGKILL))
            killer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
            finally:
                killer.cancel()
                PROCS.stop(proc)
        text = out_path.read_text(errors="replace")
        match = re.search(r"^WRKJSON (.*)$", text, re.M)
        if proc.returncode != 0 or not match:
            raise BenchError(f"wrk failed ({proc.returncode}):\n{text}")
        result = json.loads(match.group(1))
        result["cpu_s"] = usage.ru_utime + usage.ru_stime
        result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
        result["non2xx"] = result["errors"]["status"]
        result["socket_errors"] = sum(v for k, v in result["errors"].items() if k != "status")
        return result

    def measure(self, name: str, connections: int, pace_ms: int = 0) -> dict:
        proc, port, expected = self.start_server(name)
        try:
            upstream_tls = self.verify(name, port, expected)
            pids = server_pids(proc)
            idle_rss = mem_kb(pids, "VmRSS")
            scheme = "https" if name in TLS_SERVERS else "http"
            if self.args.warmup > 0:
                self.wrk(port, connections, self.args.warmup, pace_ms=pace_ms, scheme=scheme)
            pids = server_pids(proc)
            up_pids = server_pids(self.upstream)
            status_before = nginx_status(self.upstream_port)
            before, up_before = cpu_ticks(pids), cpu_ticks(up_pids)
            machine_before = cpu_jiffies()
            run = self.wrk(port, connections, self.args.duration, pace_ms=pace_ms,
                           scheme=scheme)
            machine_after = cpu_jiffies()
            pids = server_pids(proc)
            after, up_after = cpu_ticks(pids), cpu_ticks(up_pids)
            status_after = nginx_status(self.upstream_port)
            peak_rss = mem_kb(pids, "VmHWM")
            rss_after = mem_kb(pids, "VmRSS")
            if proc.poll() is not None:
                raise BenchError(f"{name} exited during the run ({proc.returncode})")
        finally:
            PROCS.stop(proc)
        seconds = run["duration_us"] / 1e6
        cpu_s = (after - before) / CLK_TCK
        up_cpu_s = (up_after - up_before) / CLK_TCK
        requests = max(run["requests"], 1)
        return {
            "server": name,
            "connections": connections,
            "pace_ms": pace_ms,
            # the upstream leg's TLS version and cipher ("": plain HTTP), as verify() saw
            "upstream_tls": upstream_tls,
            "processes": len(pids),
            "rps": run["rps"],
            "requests": run["requests"],
            "p50_ms": run["latency_us"]["p50"] / 1000,
            "p99_ms": run["latency_us"]["p99"] / 1000,
            "cpu_s": cpu_s,
            "cpu_us_per_req": cpu_s * 1e6 / requests,
            "core_busy": cpu_s / seconds,
            # how each CPU of the machine spent the run (whoever ran there): with --pin,
            # CPU 0 is the server's, CPU 1 the client's and the upstream's
            "cpu_split": (split := cpu_split(machine_before, machine_after)),
            "cpu_busy": {cpu: shares["busy"] for cpu, shares in split.items()},
            # process time on CPU 0 that was not the server's (softirq, the kernel's packet
            # work, is not counted: nobody's process time)
            "cpu0_others": (split[0]["user"] + split[0]["nice"] + split[0]["system"]
                            - cpu_s / seconds) if self.args.pin and 0 in split else 0.0,
            "idle_rss_mb": idle_rss / 1024,
            "peak_rss_mb": peak_rss / 1024,
            "rss_after_mb": rss_after / 1024,
            "non2xx": run["non2xx"],
            "socket_errors": run["socket_errors"],
            "upstream_cpu_us_per_req": (0.0 if name == "direct"
                                        else up_cpu_s * 1e6 / requests),
            "wrk_cpu_us_per_req": run["cpu_s"] * 1e6 / requests,
            # new connections the upstream accepted during the measured run and requests it
            # served, less this script's own stub_status call
            "upstream_connections": (0 if name == "direct" else
                                     status_after["accepts"] - status_before["accepts"] - 1),
            "upstream_requests": (0 if name == "direct" else
                                  status_after["requests"] - status_before["requests"] - 1),
            "wrk": run,
        }


# --- the comparison --------------------------------------------------------------------------


COLUMNS = [  # key, header, format, ratio wanted
    ("rps", "rps", "{:.0f}"),
    ("p50_ms", "p50 ms", "{:.3f}"),
    ("p99_ms", "p99 ms", "{:.3f}"),
    ("cpu_us_per_req", "cpu µs/req", "{:.2f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.1f}"),
]


def peer(server: str) -> str:
    """The server a row's ratios are against: nginx, nginx-tls for an HTTPS row, or
    nginx-tls-upstream for a TLS upstream row."""
    if server in TLS_SERVERS:
        return "nginx-tls"
    if server in TLS_UPSTREAM_SERVERS:
        return "nginx-tls-upstream"
    return "nginx"


def median_row(rows: list[dict]) -> dict:
    if len(rows) == 1:
        return rows[0]
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, (int, float)) and key != "connections":
            out[key] = statistics.median(r[key] for r in rows)
    out["cpu_busy"] = {cpu: statistics.median(r["cpu_busy"].get(cpu, 0.0) for r in rows)
                       for cpu in rows[0]["cpu_busy"]}
    out["non2xx"] = sum(r["non2xx"] for r in rows)
    out["socket_errors"] = sum(r["socket_errors"] for r in rows)
    return out


def print_table(connections: int, rows: list[dict], pinned: bool, title: bool = True) -> bool:
    """Prints one table; returns whether some row's core was shared with other work."""
    by_name = {r["server"]: r for r in rows}
    headers = (["server"] + [h for _, h, _ in COLUMNS]
               + ["core busy", "CPU0/1 busy", "idle RSS MB", "upstream conns", "errors"])
    table = []
    shared = False
    for row in rows:
        cells = [row["server"]]
        # With pinning, CPU 0 busier than the server itself: someone else ran on its core.
        if pinned and row["cpu0_others"] > 0.10:
            cells[0] += " *"
            shared = True
        ref = by_name.get(peer(row["server"]))
        for key, _, fmt in COLUMNS:
            cell = fmt.format(row[key])
            if ref and ref[key]:
                cell += f" ({row[key] / ref[key]:.2f}x)"
            cells.append(cell)
        cells.append(f"{row['core_busy'] * 100:.0f}%")
        busy = row["cpu_busy"]
        cells.append("/".join(f"{busy.get(c, 0) * 100:.0f}" for c in (0, 1)) + "%")
        cells.append(f"{row['idle_rss_mb']:.1f}")
        cells.append("-" if row["server"] == "direct" else f"{row['upstream_connections']:.0f}")
        errors = row["non2xx"] + row["socket_errors"]
        cells.append("0" if errors == 0 else
                     f"{row['non2xx']} non-2xx, {row['socket_errors']} socket")
        table.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    if title:
        print(f"\n{connections} connections (ratios against nginx; HTTPS rows against "
              f"nginx-tls; TLS upstream rows against nginx-tls-upstream):")
    else:
        print()
    print("  " + "  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                           for i, (h, w) in enumerate(zip(headers, widths))))
    for cells in table:
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(cells, widths))))
    return shared


def comparison(args, bench: Bench, meta: dict) -> dict:
    servers = args.servers
    raw: dict[int, dict[str, list[dict]]] = {c: {s: [] for s in servers}
                                             for c in args.connections}
    for round_no in range(args.rounds):
        for connections in args.connections:
            for name in servers:
                label = f"round {round_no + 1}/{args.rounds}, " if args.rounds > 1 else ""
                log(f"{label}{name}, {connections} connections: "
                    f"{args.warmup:g} s warm-up + {args.duration:g} s")
                row = bench.measure(name, connections)
                raw[connections][name].append(row)
                log(f"  {row['rps']:.0f} rps, p99 {row['p99_ms']:.2f} ms, "
                    f"{row['cpu_us_per_req']:.2f} µs cpu/req, core {row['core_busy']:.0%}")
    print()
    print(f"tollgate {meta['commit']}{' (dirty tree)' if meta['dirty'] else ''} vs nginx "
          f"{meta['versions']['nginx']}, {meta['versions']['haproxy'].split(' - ')[0]}; "
          f"client {meta['versions']['wrk'].split(' [')[0]} -t1, "
          f"{args.duration:g} s runs after {args.warmup:g} s warm-up"
          + (f", median of {args.rounds} rounds" if args.rounds > 1 else ""))
    if args.binary:
        print(f"binary: {meta['binary']} (given; the commit above is the work tree's HEAD)")
    print(f"machine: {meta['machine']['nproc']} CPUs, {meta['machine']['cpu_model']}, "
          f"kernel {meta['machine']['kernel']}")
    print(f"pinning: {meta['pinning']}")
    print(f"load average at start: {meta['loadavg_at_start']} (other work on the machine "
          f"skews every figure)")
    print(f"tollgate: RUST_LOG={args.tollgate_log_level}, JSON logs to a file; nginx and "
          f"HAProxy: no access log; one worker/thread each")
    results = {}
    shared = False
    for connections in args.connections:
        rows = [median_row(raw[connections][s]) for s in servers]
        shared |= print_table(connections, rows, args.pin)
        results[str(connections)] = {"median": rows, "rounds": raw[connections]}
        for row in rows:
            churn = row["upstream_connections"] / max(row["requests"], 1)
            if row["server"] != "direct" and churn > 0.01:
                hint = (f" (its keepalive pool, --nginx-keepalive {args.nginx_keepalive}, is"
                        f" smaller than {connections} connections)"
                        if row["server"] in ("nginx", "nginx-tls", "nginx-tls-upstream")
                        and args.nginx_keepalive < connections
                        else "")
                print(f"  note: {row['server']} opened a new upstream connection for "
                      f"{churn:.1%} of its requests{hint}")
    if args.same_load_rps:
        connections = args.same_load_connections
        pace = max(1, round(connections * 1000 / args.same_load_rps))
        rows = []
        for name in servers:
            log(f"{name}, same load: {connections} connections, each pausing {pace} ms "
                f"between requests (about {connections * 1000 / pace:.0f} rps)")
            rows.append(bench.measure(name, connections, pace_ms=pace))
        print(f"\nthe same load for every server: {connections} connections, each waiting "
              f"{pace} ms after a response before its next request (about "
              f"{connections * 1000 / pace:.0f} rps at most):", end="")
        shared |= print_table(connections, rows, args.pin, title=False)
        results["same_load"] = {"connections": connections, "pace_ms": pace, "rows": rows}
    for title, ours_name, theirs_name in PAIRS:
        lines = []
        for connections in args.connections:
            rows = {r["server"]: r for r in results[str(connections)]["median"]}
            if ours_name in rows and theirs_name in rows:
                ours, theirs = rows[ours_name], rows[theirs_name]
                lines.append(f"{connections} connections: {ours['rps'] / theirs['rps']:.2f}x "
                             f"its requests/s at "
                             f"{ours['cpu_us_per_req'] / theirs['cpu_us_per_req']:.2f}x its CPU"
                             f" per request")
        if lines:
            print(f"\n{title}: " + "; ".join(lines) + ".")
    if shared:
        print("\n* other processes took more than 10% of CPU 0, the server's core, during this"
              " run: its figures are skewed; run again on a quieter machine (or --rounds 3).")
    print("\ncpu µs/req: the server's utime+stime (whole process tree) per completed request;"
          " core busy: that CPU time / wall time; CPU0/1 busy: the machine's CPUs, whoever"
          " ran there" + (" (CPU 0: the server's, CPU 1: wrk's and the upstream's)" if args.pin
                          else "") + "; upstream conns: connections the upstream accepted"
          " during the measured run.")
    return results


# --- instructions per request (callgrind) ----------------------------------------------------

# tollgate's own request handling: the inclusive cost of each ProxyHttp phase it implements.
OWN_PHASE = re.compile(r"^\s*([\d,]+) .*<tollgate::proxy::Gateway as "
                       r"pingora_proxy::proxy_trait::ProxyHttp>::(\w+)", re.M)
MEMCPY = re.compile(r"^\s*([\d,]+) .*:__mem(?:cpy|move)_\w+ \[", re.M)


def callgrind_totals(path: Path) -> int:
    match = re.search(r"^totals:\s+(\d+)", path.read_text(errors="replace"), re.M)
    if not match:
        raise BenchError(f"{path}: no totals line")
    return int(match.group(1))


def callgrind_breakdown(path: Path) -> dict[str, int]:
    """Inclusive instructions of tollgate's own ProxyHttp phases, and memcpy/memmove."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                           str(path)], capture_output=True, text=True, check=True).stdout
    phases: dict[str, int] = {}
    for count, phase in OWN_PHASE.findall(text):
        phases[phase] = phases.get(phase, 0) + int(count.replace(",", ""))
    memcpy = sum(int(c.replace(",", "")) for c in MEMCPY.findall(text))
    return {"phases": phases, "memcpy": memcpy}


def instructions(args, bench: Bench, meta: dict) -> dict:
    """Each server under callgrind: instructions per request, which (unlike CPU time) do not
    drift with the machine's load, so they compare commits and servers exactly."""
    connections, duration = args.instr_connections, args.instr_duration
    rows = []
    for name in args.servers:
        if name == "direct":
            continue
        d = bench.workdir / f"callgrind-{name}"
        d.mkdir(exist_ok=True)
        bench.wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/callgrind.out"]
        bench.ready_timeout = 120.0
        log(f"{name} under callgrind: {connections} connections, {duration:g} s")
        proc, port, expected = bench.start_server(name)
        try:
            upstream_tls = bench.verify(name, port, expected)
            scheme = "https" if name in TLS_SERVERS else "http"
            bench.wrk(port, connections, 2, scheme=scheme)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                           capture_output=True)
            run = bench.wrk(port, connections, duration, scheme=scheme)
            before = set(d.glob("callgrind.out*"))
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                           capture_output=True)
            wait_for(lambda: set(d.glob("callgrind.out.*")) - before, 30,
                     f"{name} callgrind dump")
            dump = max(set(d.glob("callgrind.out.*")) - before, key=lambda p: p.stat().st_mtime)
            time.sleep(0.5)  # the dump is written in one go, but let it land
            kept = ROOT / "target" / "bench" / f"callgrind-{meta['commit']}-{name}.out"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dump, kept)  # for callgrind_annotate after the run
        finally:
            PROCS.stop(proc)
            bench.wrap = []
            bench.ready_timeout = 10.0
        requests = max(run["requests"], 1)
        total = callgrind_totals(dump)
        parts = callgrind_breakdown(dump)
        own = sum(parts["phases"].values())
        rows.append({
            "server": name,
            "upstream_tls": upstream_tls,
            "requests": run["requests"],
            "non2xx": run["non2xx"] + run["socket_errors"],
            "instructions_per_req": total / requests,
            "memcpy_per_req": parts["memcpy"] / requests,
            "own_phases_per_req": own / requests,
            "own_phases": {k: v / requests for k, v in sorted(parts["phases"].items())},
        })
        log(f"  {total / requests:,.0f} instructions per request ({run['requests']} requests)")
    by_name = {r["server"]: r for r in rows}
    width = max([len("server")] + [len(r["server"]) for r in rows])
    print()
    print(f"instructions per request under callgrind (valgrind), {connections} connections, "
          f"{duration:g} s; tollgate {meta['commit']}{' (dirty tree)' if meta['dirty'] else ''}"
          f"; ratios against nginx (HTTPS rows against nginx-tls, TLS upstream rows against "
          f"nginx-tls-upstream)")
    print(f"  {'server':<{width}} {'instr/req':>18} {'of which memcpy':>16} "
          f"{'in tollgate phases':>19}")
    for row in rows:
        ref = by_name.get(peer(row["server"]))
        ratio = (f" ({row['instructions_per_req'] / ref['instructions_per_req']:.2f}x)"
                 if ref else "")
        own = (f"{row['own_phases_per_req']:,.0f}" if row["server"].startswith("tollgate")
               else "-")
        print(f"  {row['server']:<{width}} {row['instructions_per_req']:>10,.0f}{ratio:>8} "
              f"{row['memcpy_per_req']:>16,.0f} {own:>19}")
        if row["non2xx"]:
            print(f"    note: {row['non2xx']} failed requests")
    for row in rows:
        if row["own_phases"]:
            phases = ", ".join(f"{k} {v:,.0f}" for k, v in row["own_phases"].items() if v >= 1)
            print(f"  {row['server']}: tollgate's phases (inclusive, per request): {phases}")
    print("\nInstructions are counted for the whole process (every thread) from callgrind's "
          "zeroing after a warm-up to its dump; valgrind counts each iteration of a `rep movs`"
          " copy as an instruction, which inflates memcpy against its real cost. tollgate's"
          " phases include the pingora header calls they make.")
    return {"connections": connections, "duration_s": duration, "rows": rows}


# --- footprint (RSS, and what it is) ---------------------------------------------------------

# The targets for tollgate with FOOTPRINT_PROVIDERS providers and FOOTPRINT_ROUTES
# routes: idle RSS, and RSS at a connection count.
FOOTPRINT_PROVIDERS, FOOTPRINT_ROUTES = 10, 100
FOOTPRINT_IDLE_TARGET_MB = 16
FOOTPRINT_LOAD_TARGET = (256, 40)  # connections, MB
# Seconds between the check through the proxy and the idle reading: the startup work and
# the first requests' allocations (readiness probes, the check) are done by then. Idle means
# settled: tollgate lets go of its start-up code pages 5 s after start
# (src/memory.rs), so its idle RSS is read after that, and nginx's at the same moment.
FOOTPRINT_IDLE_WAIT_S = 7.0
# Seconds RSS is followed after the load stops. tollgate returns freed memory to the OS
# every 5 s, so this spans two of its purges.
FOOTPRINT_AFTER_S = 10
# The parts of RSS that footprint_snapshot() tells apart, in the order they are printed.
FOOTPRINT_PARTS = [
    ("binary", "binary"),          # file pages of the executable: code, read-only data
    ("libraries", "libraries"),    # file pages of shared libraries and other mapped files
    ("data", "data"),              # anonymous pages of the binary's and libraries' mappings
                                   # and their .bss: relocations, statics
    ("heap", "[heap]"),            # brk (glibc malloc's main arena: nginx's allocations)
    ("stacks", "stacks"),          # thread stacks and the main [stack]
    ("anon", "anon mappings"),     # every other anonymous mapping: allocator memory
                                   # (mimalloc's arena in tollgate), large malloc chunks
    ("shared", "shared memory"),   # /dev/zero, SysV, memfd (nginx's shared zones)
    ("other", "other"),            # [vdso], [vvar] and the like
]
SMAPS_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


def footprint_template(providers: int, routes: int) -> str:
    """tollgate-static's config scaled up: `providers` static providers and `routes` routes,
    route rN (/rN/) to the shared upstream with provider p(N % providers)'s token. Route r0
    strips its prefix, so /r0/echo-auth reaches the upstream's /echo-auth for the check
    before load, and /r0/, the path loaded, its / (the same `ok` as in the comparison); the
    others keep their paths, as a gateway's routes mostly do."""
    out = ["# tollgate-static scaled: generated by benches/load.py --footprint.\n"
           "server:\n"
           '  listen: ["127.0.0.1:{{port}}"]\n'
           '  admin: "127.0.0.1:{{admin_port}}"\n'
           "  threads: 1\n\nproviders:\n"]
    for p in range(providers):
        out.append(f"  p{p}:\n    type: static\n    value: {STATIC_TOKEN}-{p}\n")
    out.append("\nroutes:\n")
    for r in range(routes):
        out.append(f"  - name: r{r}\n    match: {{ path_prefix: /r{r}/ }}\n"
                   + ("    strip_prefix: true\n" if r == 0 else "")
                   + '    upstream: { url: "http://127.0.0.1:{{upstream_port}}" }\n'
                   f"    credential: {{ provider: p{r % providers}, header: Authorization, "
                   f'format: "Bearer {{token}}" }}\n')
    return "".join(out)


def read_smaps(pid: int) -> list[dict]:
    """/proc/PID/smaps: each mapping's start, end, permissions, name and kB fields."""
    maps: list[dict] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            header = SMAPS_HEADER.match(line)
            if header:
                maps.append({"start": int(header[1], 16), "end": int(header[2], 16),
                             "perm": header[3], "name": header[4].strip(), "kb": {}})
            elif maps and line.rstrip().endswith(" kB"):
                key, value = line.split(":", 1)
                maps[-1]["kb"][key] = int(value.split()[0])
    return maps


def stack_pointers(pid: int) -> set[int]:
    """Each thread's stack pointer, from /proc/PID/task/TID/syscall (`nr args... sp pc` for a
    thread in a syscall, `running` for one on a CPU, which gives none)."""
    sps = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/syscall").read_text().split()
        except OSError:
            continue
        if len(fields) >= 3 and fields[-2].startswith("0x"):
            sps.add(int(fields[-2], 16))
    return sps


def footprint_snapshot(pids: list[int]) -> dict:
    """RSS of the processes `pids`, summed, from /proc/PID/status (VmRSS, RssAnon, RssFile,
    RssShmem, Threads) and parted by /proc/PID/smaps into FOOTPRINT_PARTS (kB), with the
    transparent huge pages among the anonymous ones (AnonHugePages) and PSS (which splits
    the pages nginx's master and worker share). Summed like the comparison's RSS, so a page
    two processes share counts twice."""
    out = {"rss_kb": mem_kb(pids, "VmRSS"), "anon_kb": mem_kb(pids, "RssAnon"),
           "file_kb": mem_kb(pids, "RssFile"), "shmem_kb": mem_kb(pids, "RssShmem"),
           "threads": mem_kb(pids, "Threads"), "processes": len(pids),
           "pss_kb": 0, "thp_kb": 0, "smaps_rss_kb": 0,
           "parts_kb": {key: 0 for key, _ in FOOTPRINT_PARTS}}
    parts = out["parts_kb"]
    for pid in pids:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            sps = stack_pointers(pid)
            maps = read_smaps(pid)
        except OSError:
            continue  # gone (an nginx worker between tree() and here): counted by no one
        prev = None
        for m in maps:
            rss, anon = m["kb"].get("Rss", 0), m["kb"].get("Anonymous", 0)
            name = m["name"]
            out["pss_kb"] += m["kb"].get("Pss", 0)
            out["thp_kb"] += m["kb"].get("AnonHugePages", 0)
            out["smaps_rss_kb"] += rss
            if name.startswith(("/dev/zero", "/SYSV", "/memfd:")) or m["perm"][3] == "s":
                parts["shared"] += rss
            elif name.startswith("/"):
                # A file mapping's pages are the file's until written (relocations,
                # .data): those are anonymous copies, the process's own.
                parts["binary" if name == exe else "libraries"] += rss - anon
                parts["data"] += anon
            elif name == "[heap]":
                parts["heap"] += rss
            elif name == "[stack]" or any(m["start"] <= sp < m["end"] for sp in sps) or (
                    # A thread stack glibc mapped: one guard page (---p) right below it.
                    # This finds the stacks of threads on a CPU (no stack pointer above).
                    prev is not None and not prev["name"] and prev["perm"] == "---p"
                    and prev["end"] == m["start"] and prev["end"] - prev["start"] <= 65536
                    and m["perm"].startswith("rw") and m["end"] - m["start"] <= 16 << 20):
                parts["stacks"] += rss
            elif name.startswith("["):
                parts["other"] += rss
            elif (prev is not None and prev["name"].startswith("/") and prev["perm"] == "rw-p"
                  and prev["end"] == m["start"] and m["end"] - m["start"] <= 16 << 20):
                # An unnamed mapping right after a file's writable one: its .bss.
                parts["data"] += rss
            else:
                parts["anon"] += rss
            prev = m
    return out


def snapshot_mb(snap: dict) -> dict:
    """A footprint_snapshot() in MB (kB / 1024, as the comparison's RSS), for the JSON."""
    mb = {k.removesuffix("_kb") + "_mb": v / 1024 for k, v in snap.items() if k.endswith("_kb")
          and k != "parts_kb"}
    mb["parts_mb"] = {k: v / 1024 for k, v in snap["parts_kb"].items()}
    mb["threads"], mb["processes"] = snap["threads"], snap["processes"]
    return mb


class RssSampler:
    """VmRSS of `pids` every `interval` while a run goes on (its maximum bounds the peak of
    the measured run alone, where VmHWM includes the warm-up), and one footprint_snapshot()
    half way through: what the RSS under load is made of."""

    def __init__(self, pids: list[int], middle: float, interval: float = 0.2) -> None:
        self.pids = pids
        self.middle = middle
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # seconds since start, kB
        self.mid: dict | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic() - start
            self.samples.append((now, mem_kb(self.pids, "VmRSS")))
            if self.mid is None and now >= self.middle:
                self.mid = footprint_snapshot(self.pids)
            self.stop.wait(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join(10)


def footprint_run(args, bench: Bench, name: str, connections: int) -> dict:
    """One fresh server: idle RSS and its parts, then the comparison's warm-up and measured
    run at `connections`, then RSS right after and for FOOTPRINT_AFTER_S after."""
    if name == "nginx":
        proc, port, expected = bench.start_server(name)
        prefix = ""
    else:
        proc, port = bench.start_tollgate(name, "tollgate-footprint.yaml")
        expected, prefix = f"Bearer {STATIC_TOKEN}-0", "/r0"
    try:
        bench.verify(name, port, expected, prefix=prefix)
        time.sleep(FOOTPRINT_IDLE_WAIT_S)
        pids = server_pids(proc)
        idle = footprint_snapshot(pids)
        path = f"{prefix}/"
        # As Bench.measure does it, so the peak RSS is the comparison's.
        if args.warmup > 0:
            bench.wrk(port, connections, args.warmup, path=path)
        pids = server_pids(proc)
        with RssSampler(pids, args.duration / 2) as sampler:
            run = bench.wrk(port, connections, args.duration, path=path)
        stopped = time.monotonic()
        peak = mem_kb(pids, "VmHWM")
        right_after = mem_kb(pids, "VmRSS")
        after = footprint_snapshot(pids)
        series = [(0.0, right_after)]
        for second in range(1, FOOTPRINT_AFTER_S + 1):
            time.sleep(max(0.0, stopped + second - time.monotonic()))
            series.append((time.monotonic() - stopped, mem_kb(pids, "VmRSS")))
        later = footprint_snapshot(pids)
        if proc.poll() is not None:
            raise BenchError(f"{name} exited during the run ({proc.returncode})")
    finally:
        PROCS.stop(proc)
    return {
        "server": name,
        "connections": connections,
        "path": path,
        "rps": run["rps"],
        "requests": run["requests"],
        "non2xx": run["non2xx"],
        "socket_errors": run["socket_errors"],
        "idle_rss_mb": idle["rss_kb"] / 1024,
        "threads_idle": idle["threads"],
        # VmHWM after the measured run (warm-up included), as the comparison's peak RSS
        "peak_rss_mb": peak / 1024,
        "sampled_max_rss_mb": max((kb for _, kb in sampler.samples), default=0) / 1024,
        "sampled_max_at_s": max(sampler.samples, key=lambda s: s[1], default=(0.0, 0))[0],
        "sampled_rss_series_mb": [(round(t, 2), kb / 1024) for t, kb in sampler.samples],
        "rss_after_mb": right_after / 1024,
        f"rss_{FOOTPRINT_AFTER_S}s_after_mb": later["rss_kb"] / 1024,
        "rss_after_series_mb": [(round(t, 2), kb / 1024) for t, kb in series],
        "kb_per_connection": (peak - idle["rss_kb"]) / connections,
        "idle": snapshot_mb(idle),
        "mid_run": snapshot_mb(sampler.mid) if sampler.mid else None,
        "right_after": snapshot_mb(after),
        f"{FOOTPRINT_AFTER_S}s_after": snapshot_mb(later),
    }


def parts_line(snap: dict) -> str:
    """`binary 8.1, libraries 2.3, ...` in MB, the non-zero parts of a snapshot_mb()."""
    parts = [f"{label} {snap['parts_mb'][key]:.1f}" for key, label in FOOTPRINT_PARTS
             if snap["parts_mb"][key] >= 0.05]
    thp = f" (THP {snap['thp_mb']:.1f})" if snap["thp_mb"] >= 0.05 else ""
    return (", ".join(parts) + f" = {snap['smaps_rss_mb']:.1f} MB; anonymous "
            f"{snap['anon_mb']:.1f}{thp}, file {snap['file_mb']:.1f}, PSS {snap['pss_mb']:.1f}, "
            f"{snap['threads']} threads in {snap['processes']} process"
            + ("es" if snap["processes"] != 1 else ""))


def footprint(args, bench: Bench, meta: dict) -> dict:
    """nginx (for reference) and tollgate with `--footprint-providers` static providers and
    `--footprint-routes` routes: idle RSS and what it is, and RSS under load, right after it
    and FOOTPRINT_AFTER_S later, each server fresh for each connection count."""
    providers, routes = args.footprint_providers, args.footprint_routes
    # fill() looks here: start_tollgate() renders and checks it like the other configs.
    INLINE_TEMPLATES["tollgate-footprint.yaml"] = footprint_template(providers, routes)
    tollgate = "tollgate-static"
    servers = ["nginx", tollgate]
    runs: dict[str, dict[int, dict]] = {s: {} for s in servers}
    for connections in args.connections:
        for name in servers:
            log(f"footprint, {name}, {connections} connections: {FOOTPRINT_IDLE_WAIT_S:g} s "
                f"idle, {args.warmup:g} s warm-up + {args.duration:g} s, "
                f"{FOOTPRINT_AFTER_S} s after")
            row = footprint_run(args, bench, name, connections)
            runs[name][connections] = row
            log(f"  idle {row['idle_rss_mb']:.1f} MB, peak {row['peak_rss_mb']:.1f} MB, "
                f"after {row['rss_after_mb']:.1f} MB, "
                f"{FOOTPRINT_AFTER_S} s later "
                f"{row[f'rss_{FOOTPRINT_AFTER_S}s_after_mb']:.1f} MB; {row['rps']:.0f} rps")
    later = f"rss_{FOOTPRINT_AFTER_S}s_after_mb"
    first = args.connections[0]
    headers = ["server", "idle RSS", "anon/file", "threads"]
    for c in args.connections:
        headers += [f"{c}c peak", f"{c}c after", f"{c}c +{FOOTPRINT_AFTER_S}s"]

    def cell(value: float, ref_value: float | None) -> str:
        return f"{value:.1f}" + (f" ({value / ref_value:.2f}x)" if ref_value else "")

    table = []
    for name in servers:
        ref = runs["nginx"] if name != "nginx" else None
        # The idle columns are the first start's (every start has its own, in the JSON).
        idle = runs[name][first]["idle"]
        cells = [name, cell(idle["rss_mb"], ref[first]["idle"]["rss_mb"] if ref else None),
                 f"{idle['anon_mb']:.1f}/{idle['file_mb']:.1f}", str(idle["threads"])]
        for c in args.connections:
            row = runs[name][c]
            for key in ("peak_rss_mb", "rss_after_mb", later):
                cells.append(cell(row[key], ref[c][key] if ref else None))
        table.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    print()
    print(f"footprint: tollgate {meta['commit']}{' (dirty tree)' if meta['dirty'] else ''} "
          f"({tollgate}: {providers} static providers, {routes} routes, threads 1, loaded "
          f"through /r0/) vs nginx {meta['versions']['nginx']} (the comparison's proxy, one "
          f"worker); wrk -t1, {args.duration:g} s runs after {args.warmup:g} s warm-up, "
          f"each server fresh for each connection count")
    if args.binary:
        print(f"binary: {meta['binary']} (given; the commit above is the work tree's HEAD)")
    print(f"pinning: {meta['pinning']}; load average at start: {meta['loadavg_at_start']}")
    print("  " + "  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                           for i, (h, w) in enumerate(zip(headers, widths))))
    for cells in table:
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(cells, widths))))
    print(f"\nRSS in MB (kB / 1024), summed over a server's processes (nginx: master and "
          f"worker); ratios against nginx. idle: {FOOTPRINT_IDLE_WAIT_S:g} s after the check "
          f"through the proxy; peak: VmHWM after the measured run (warm-up included, as the "
          f"comparison's peak RSS); after: VmRSS as wrk exits; +{FOOTPRINT_AFTER_S}s: VmRSS "
          f"{FOOTPRINT_AFTER_S} s later.")
    print("\nwhat each MB is (/proc/PID/smaps, MB):")
    for name in servers:
        print(f"  {name}, idle: {parts_line(runs[name][first]['idle'])}")
    last = args.connections[-1]
    for name in servers:
        row = runs[name][last]
        if row["mid_run"]:
            print(f"  {name}, half way through the run at {last} connections: "
                  f"{parts_line(row['mid_run'])}")
        print(f"  {name}, {FOOTPRINT_AFTER_S} s after {last} connections: "
              f"{parts_line(row[f'{FOOTPRINT_AFTER_S}s_after'])}")
    print("\nunder load and after (MB):")
    for name in servers:
        for c in args.connections:
            row = runs[name][c]
            print(f"  {name} at {c} connections: (peak - idle) / connections "
                  f"{row['kb_per_connection']:.0f} kB; VmRSS sampled in the measured run: "
                  f"max {row['sampled_max_rss_mb']:.1f} at {row['sampled_max_at_s']:.1f} s"
                  + (f", half way {row['mid_run']['rss_mb']:.1f}" if row["mid_run"] else "")
                  + "; after it, by the second: "
                  + " ".join(f"{mb:.1f}" for _, mb in row["rss_after_series_mb"]))
    targets = []
    if providers == FOOTPRINT_PROVIDERS and routes == FOOTPRINT_ROUTES:
        idle_mb = runs[tollgate][first]["idle_rss_mb"]
        targets.append(f"idle RSS at most {FOOTPRINT_IDLE_TARGET_MB} MB: {idle_mb:.1f} MB, "
                       + ("met" if idle_mb <= FOOTPRINT_IDLE_TARGET_MB else "not met"))
        at, limit = FOOTPRINT_LOAD_TARGET
        if at in runs[tollgate]:
            peak_mb = runs[tollgate][at]["peak_rss_mb"]
            targets.append(f"at most {limit} MB at {at} connections: peak {peak_mb:.1f} MB, "
                           + ("met" if peak_mb <= limit else "not met"))
        print(f"\nthe issue's targets ({providers} providers, {routes} routes): "
              + "; ".join(targets) + ".")
    failed = {f"{n} at {c}": r["non2xx"] + r["socket_errors"]
              for n in servers for c, r in runs[n].items() if r["non2xx"] + r["socket_errors"]}
    if failed:
        print(f"\nnote: failed requests (wrk non-2xx and socket errors): {failed}")
    print("\nParts: binary and libraries are their file pages (shared with the page cache); "
          "data the pages written in their mappings (relocations, statics, .bss); [heap] "
          "brk; stacks the threads'; anon mappings the rest of the anonymous memory (the "
          "allocator's: mimalloc in tollgate); THP the transparent huge pages among the "
          "anonymous ones.")
    return {
        "providers": providers,
        "routes": routes,
        "threads": 1,
        "idle_wait_s": FOOTPRINT_IDLE_WAIT_S,
        "after_s": FOOTPRINT_AFTER_S,
        "config": INLINE_TEMPLATES["tollgate-footprint.yaml"],
        "targets": {"idle_mb": FOOTPRINT_IDLE_TARGET_MB,
                    "load": {"connections": FOOTPRINT_LOAD_TARGET[0],
                             "mb": FOOTPRINT_LOAD_TARGET[1]},
                    "results": targets},
        "runs": {name: {str(c): row for c, row in by_c.items()} for name, by_c in runs.items()},
    }


# --- the expiry storm ------------------------------------------------------------------------


class TokenServer:
    """POST /oauth/token: a fresh token each call, `expires_in` as set, after `delay`;
    records every call's start and end."""

    def __init__(self, expires_in: int, delay: float) -> None:
        self.expires_in = expires_in
        self.delay = delay
        self.calls: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                start = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path.split("?")[0] != "/oauth/token":
                    self.send_error(404)
                    return
                if outer.delay:
                    time.sleep(outer.delay)
                body = json.dumps({"access_token": f"storm-{secrets.token_hex(8)}",
                                   "token_type": "Bearer",
                                   "expires_in": outer.expires_in}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with outer.lock:
                    outer.calls.append((start, time.monotonic()))

            def log_message(self, *_):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.server.shutdown()
        self.server.server_close()


class Probe:
    """One request every `interval` on its own keep-alive connection, timed."""

    def __init__(self, port: int, interval: float) -> None:
        self.port = port
        self.interval = interval
        self.samples: list[tuple[float, float, int]] = []  # start, seconds, status (0: error)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        conn = None
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                status = 0
                if conn is not None:
                    conn.close()
                conn = None
            self.samples.append((start, time.monotonic() - start, status))
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - start)))
        if conn is not None:
            conn.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def expiry_storm(args, bench: Bench) -> dict:
    lifetime = args.storm_expires_in
    lead = min(args.storm_before_expiry, lifetime / 2)
    with TokenServer(lifetime, args.token_delay) as tokens:
        proc, port = bench.start_tollgate(
            "tollgate-storm", "tollgate-oauth2.yaml", token_port=tokens.port,
            before_expiry=f"{round(args.storm_before_expiry * 1000)}ms")
        try:
            status, body = http_call(port, "/echo-auth")
            if status != 200 or not body.startswith(b"Bearer storm-"):
                raise BenchError(f"tollgate-storm: /echo-auth answered {status} {body[:100]!r}")
            log(f"expiry storm: tokens live {lifetime} s, refresh lead {lead:g} s, token "
                f"calls take {args.token_delay:g} s; {args.storm_connections} connections "
                f"for {args.storm_duration:g} s")
            probe = Probe(port, args.probe_interval)
            start = time.monotonic()
            probe.thread.start()
            try:
                run = bench.wrk(port, args.storm_connections, args.storm_duration)
            finally:
                probe.stop.set()
                probe.thread.join(10)
            end = time.monotonic()
            if proc.poll() is not None:
                raise BenchError(f"tollgate exited during the storm ({proc.returncode})")
        finally:
            PROCS.stop(proc)
    with tokens.lock:
        calls = list(tokens.calls)
    window = end - start
    in_window = [c for c in calls if start <= c[0] <= end]
    starts = [c[0] for c in in_window]
    intervals = [b - a for a, b in zip(starts, starts[1:])]
    during, outside = [], []
    for t0, seconds, status in probe.samples:
        in_flight = any(c0 <= t0 <= c1 for c0, c1 in calls)
        (during if in_flight else outside).append((seconds, status))
    probe_failures = sum(1 for _, _, st in probe.samples if not 200 <= st < 300)
    # Each token's own lifetime, from the end of the call that issued it: how many calls
    # started in it. Exactly one (the call that renews it) is the target; more means calls
    # beyond the schedule, none a token that expired unrenewed. Only tokens whose whole
    # lifetime lies in the measured window count.
    per_token = [sum(1 for c0, _ in calls if e <= c0 < e + lifetime)
                 for _, e in calls if start <= e and e + lifetime <= end]
    overlapping = sum(1 for (a0, a1), (b0, _) in zip(calls, calls[1:]) if b0 < a1)

    def stats(samples):
        lat = [s * 1000 for s, _ in samples]
        return {"count": len(samples), "p50_ms": percentile(lat, 50),
                "p99_ms": percentile(lat, 99), "max_ms": max(lat, default=0.0),
                "failed": sum(1 for _, st in samples if not 200 <= st < 300)}

    result = {
        "expires_in_s": lifetime,
        "before_expiry_s": args.storm_before_expiry,
        "refresh_lead_s": lead,
        "expected_interval_s": lifetime - lead,
        "token_delay_s": args.token_delay,
        "connections": args.storm_connections,
        "window_s": window,
        "provider_calls_total": len(calls),
        "provider_calls_in_window": len(in_window),
        "calls_per_lifetime": len(in_window) / (window / lifetime),
        "calls_per_token_lifetime": per_token,
        "tokens_with_exactly_one_call": sum(1 for n in per_token if n == 1),
        "overlapping_calls": overlapping,
        "calls_per_lifetime_from_intervals": (lifetime / statistics.mean(intervals)
                                              if intervals else 0.0),
        "intervals_s": intervals,
        "interval_min_s": min(intervals, default=0.0),
        "interval_mean_s": statistics.mean(intervals) if intervals else 0.0,
        "interval_max_s": max(intervals, default=0.0),
        "wrk": run,
        "rps": run["rps"],
        "p50_ms": run["latency_us"]["p50"] / 1000,
        "p99_ms": run["latency_us"]["p99"] / 1000,
        "max_ms": run["latency_us"]["max"] / 1000,
        "failed_requests": run["non2xx"] + run["socket_errors"] + probe_failures,
        "probe_during_refresh": stats(during),
        # a request that waited on the token call would take at least the call's time
        "probe_during_refresh_as_slow_as_the_call": sum(
            1 for seconds, _ in during if seconds >= args.token_delay),
        "probe_outside_refresh": stats(outside),
    }
    d, o = result["probe_during_refresh"], result["probe_outside_refresh"]
    print()
    print(f"expiry storm: tollgate (oauth2), tokens with expires_in {lifetime} s, "
          f"refresh.before_expiry {args.storm_before_expiry} s (lead {lead:g} s: a refresh "
          f"is due every {lifetime - lead:g} s), token calls take {args.token_delay:g} s")
    print(f"  load: wrk -t1 -c{args.storm_connections}, {window:.1f} s, "
          f"{run['rps']:.0f} rps; probe every {args.probe_interval * 1000:g} ms")
    print(f"  provider calls in the window: {len(in_window)} "
          f"({len(calls)} in all, with the login at start and any during shutdown)")
    counts = sorted(set(per_token))
    print(f"  calls in each token's own lifetime: {result['tokens_with_exactly_one_call']} of "
          f"{len(per_token)} tokens saw exactly one (its renewal); counts seen: {counts}; "
          f"calls that overlapped another: {overlapping}")
    print(f"  provider calls per {lifetime} s of load: {result['calls_per_lifetime']:.2f} "
          f"(renewing {lead:g} s ahead gives {lifetime / (lifetime - lead):.2f}: a token is "
          f"replaced before it expires, so lifetimes overlap by the lead)")
    print(f"  interval between calls: min {result['interval_min_s']:.2f} s, mean "
          f"{result['interval_mean_s']:.2f} s, max {result['interval_max_s']:.2f} s "
          f"(lifetime / mean interval: "
          f"{result['calls_per_lifetime_from_intervals']:.2f} calls per lifetime)")
    print(f"  failed requests: {result['failed_requests']} (wrk non-2xx {run['non2xx']}, "
          f"wrk socket errors {run['socket_errors']}, probe {probe_failures})")
    print(f"  latency (wrk, all requests): p50 {result['p50_ms']:.3f} ms, p99 "
          f"{result['p99_ms']:.3f} ms, max {result['max_ms']:.3f} ms")
    print(f"  probe, sent while a token call was in flight: {d['count']} requests, p50 "
          f"{d['p50_ms']:.3f} ms, p99 {d['p99_ms']:.3f} ms, max {d['max_ms']:.3f} ms, "
          f"{d['failed']} failed, {result['probe_during_refresh_as_slow_as_the_call']} as slow "
          f"as the token call ({args.token_delay * 1000:g} ms: would have waited on it)")
    print(f"  probe, the others: {o['count']} requests, p50 {o['p50_ms']:.3f} ms, p99 "
          f"{o['p99_ms']:.3f} ms, max {o['max_ms']:.3f} ms, {o['failed']} failed")
    return result


# --- main ------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
    parser.add_argument("--connections", type=ints, default=None,
                        help="wrk connection counts, comma-separated (default 16,64,256; "
                        "--footprint: 64,256)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run "
                        "(default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up before "
                        "each measured run (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole sequence; the "
                        "table shows medians (default 1)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"which to run, comma-separated (default {','.join(SERVERS)})")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 connections, 3 s "
                        "runs, 1 s warm-up (expiry storm: 10 s)")
    parser.add_argument("--binary", help="a tollgate binary to use instead of building one")
    parser.add_argument("--json", help="where to write the results (default "
                        "target/bench/load-<commit>-<time>.json; storm-, instructions-, "
                        "footprint-<commit>-<time>.json for those modes)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None,
                        help="pin the measured server to CPU 0, wrk and the upstream to CPU 1 "
                        "(default: on with 2+ CPUs and taskset)")
    parser.add_argument("--tollgate-log-level", default="warn",
                        help="RUST_LOG for tollgate (default warn: no access lines)")
    parser.add_argument("--nginx-keepalive", type=int, default=1024,
                        help="nginx's upstream `keepalive` (default 1024: above every "
                        "connection count, so nginx never reconnects to the upstream)")
    parser.add_argument("--same-load-rps", type=int, default=10000,
                        help="after the saturating runs, load every server at about this "
                        "rate to compare latency at the same load (default 10000; 0: skip)")
    parser.add_argument("--same-load-connections", type=int, default=64,
                        help="connections of the same-load run (default 64)")
    parser.add_argument("--expiry-storm", action="store_true",
                        help="run the expiry storm instead of the comparison")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per request under callgrind instead of the "
                        "comparison (installs valgrind when missing)")
    parser.add_argument("--footprint", action="store_true",
                        help="measure RSS (idle, under load, after) and what it is made of, "
                        "nginx and tollgate with many providers and routes, instead of the "
                        "comparison")
    parser.add_argument("--footprint-providers", type=int, default=FOOTPRINT_PROVIDERS,
                        help=f"static providers in --footprint's tollgate config (default "
                        f"{FOOTPRINT_PROVIDERS})")
    parser.add_argument("--footprint-routes", type=int, default=FOOTPRINT_ROUTES,
                        help=f"routes in --footprint's tollgate config (default "
                        f"{FOOTPRINT_ROUTES})")
    parser.add_argument("--instr-connections", type=int, default=16,
                        help="wrk connections under callgrind (default 16)")
    parser.add_argument("--instr-duration", type=float, default=8,
                        help="seconds counted under callgrind (default 8)")
    parser.add_argument("--storm-duration", type=float, default=20,
                        help="seconds of load in the expiry storm (default 20)")
    parser.add_argument("--storm-connections", type=int, default=64,
                        help="wrk connections in the expiry storm (default 64)")
    parser.add_argument("--storm-expires-in", type=int, default=4,
                        help="expires_in of the storm's tokens, seconds (default 4)")
    parser.add_argument("--storm-before-expiry", type=float, default=0.5,
                        help="tollgate's refresh.before_expiry in the storm, seconds "
                        "(default 0.5)")
    parser.add_argument("--token-delay", type=float, default=0.1,
                        help="seconds each storm token call takes (default 0.1)")
    parser.add_argument("--probe-interval", type=float, default=0.01,
                        help="seconds between the storm probe's requests (default 0.01)")
    args = parser.parse_args(argv)
    if sum((args.expiry_storm, args.instructions, args.footprint)) > 1:
        parser.error("--expiry-storm, --instructions and --footprint are separate runs: "
                     "choose one")
    if args.connections is None:
        args.connections = [64, 256] if args.footprint else [16, 64, 256]
    if args.quick:
        args.same_load_rps = 0
        args.connections = [64]
        args.duration = 3
        args.warmup = 1
        args.storm_duration = 10
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in args.servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown servers {unknown}; choose from {SERVERS}")
    if args.footprint:
        # What it runs, whatever --servers says; so no bare pingora proxy is built or needed
        # beside --binary either.
        args.servers = ["nginx", "tollgate-static"]
        if args.footprint_providers < 1 or args.footprint_routes < 1:
            parser.error("--footprint-providers and --footprint-routes need 1 or more")
    if not args.connections or min(args.connections) < 1:
        parser.error("--connections needs positive counts")
    can_pin = len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset") is not None
    if args.pin is None:
        args.pin = can_pin
    elif args.pin and not can_pin:
        parser.error("--pin needs taskset and 2+ CPUs")
    if args.pin and not {0, 1} <= os.sched_getaffinity(0):
        parser.error("--pin uses CPUs 0 and 1, which this process may not use")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="tollgate-load-"))
    os.chmod(workdir, 0o755)
    try:
        ensure_tools(args)
        binary = build_tollgate(args)
        commit = git("rev-parse", "--short", "HEAD")
        meta = {
            "commit": commit,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "binary": str(binary),
            "machine": machine_info(),
            "versions": versions(binary),
            "pinning": ("measured server on CPU 0; wrk and the shared upstream nginx on CPU 1"
                        if args.pin else "none (taskset missing, 1 CPU, or --no-pin)"),
            "tollgate_log_level": args.tollgate_log_level,
            "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
        }
        bench = Bench(args, binary, workdir)
        # Runs of one commit are kept apart: comparing them is the point.
        stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
        bench.start_upstream()
        if args.expiry_storm:
            meta["storm"] = expiry_storm(args, bench)
            default = ROOT / "target" / "bench" / f"storm-{commit}-{stamp}.json"
        elif args.footprint:
            meta["footprint"] = footprint(args, bench, meta)
            default = ROOT / "target" / "bench" / f"footprint-{commit}-{stamp}.json"
        elif args.instructions:
            meta["instructions"] = instructions(args, bench, meta)
            default = ROOT / "target" / "bench" / f"instructions-{commit}-{stamp}.json"
        else:
            meta["results"] = comparison(args, bench, meta)
            default = ROOT / "target" / "bench" / f"load-{commit}-{stamp}.json"
        path = Path(args.json) if args.json else default
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(meta, indent=2) + "\n")
        print(f"\nresults: {path}")
        return 0
    except BenchError as error:
        log(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; stopping everything started")
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        PROCS.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
