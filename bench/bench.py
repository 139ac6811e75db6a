#!/usr/bin/env python3
"""`make bench`: Confidant under load, through its real HTTP API, with real secure user tokens.

Starts the release binary on a fresh SQLite database (and on PostgreSQL, in a database of its own,
when one is reachable), seeds an application, agents, a key and N users with conversations and
memory, then drives the workloads with wrk over loopback: the `/healthz` ceiling (the machine's
limit for one tiny request, measured in the same run), list my conversations, get one
conversation, one completion turn (echo model, both messages stored), memory search, the guarded
and webhooked variants, and, in front of a fast native mock provider (`examples/mock_provider.rs`
streaming 50 chunks), the mock called directly and a stateless turn through Confidant (one
connection each, for the latency Confidant adds) and a stored turn. Last, `--streams` simultaneous
streaming turns paced by the mock (20 chunks a second for `--stream-seconds`), driven by
`examples/stream_load.rs`, with Confidant's resident memory sampled while they run and the CPU
each of the three processes spends per chunk counted: once with the contract's 5,000 streams,
once with 2,000, about what this 2-core machine can carry.

Prints one table (requests/s, p50/p99, errors, the server's peak resident memory, and each
workload against what it is measured against) and saves it as JSON under results/.

--scale seeds MESSAGES messages (default 10 million) straight into the SQLite file first and runs
list/get again, to show their latency does not grow with the table.

Only the standard library is used; wrk comes from Debian (installed by the Makefile if missing).
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CONFIDANT_BENCH_BINARY runs another build (a before/after comparison) under the same load.
BINARY = os.environ.get("CONFIDANT_BENCH_BINARY") or os.path.join(ROOT, "target", "release", "confidant")
EXAMPLES = os.path.join(ROOT, "target", "release", "examples")
EMAIL, PASSWORD = "bench@example.com", "bench-password-123"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, base):
        self.base = base

    def call(self, method, path, body=None, token=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if body is not None:
            request.add_header("content-type", "application/json")
        if token:
            request.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request) as response:
                text = response.read()
                return json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            raise SystemExit(f"{method} {path}: {error.code} {error.read().decode()}")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def user_token(kid, secret, sub, ttl=24 * 3600):
    """HS256, as any company backend signs it."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    claims = b64(json.dumps({"sub": sub, "iat": int(time.time()), "exp": int(time.time()) + ttl}).encode())
    signature = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


class Server:
    def __init__(self, database_url, workdir, master_key, wrapper=()):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, CONFIDANT_DATABASE_URL=database_url, CONFIDANT_ADMIN_EMAIL=EMAIL,
                   CONFIDANT_ADMIN_PASSWORD=PASSWORD, CONFIDANT_MASTER_KEY=master_key, RUST_LOG="warn",
                   # The webhooked workload's receiver listens on loopback.
                   CONFIDANT_PROVIDER_ALLOWED_HOSTS="127.0.0.1")
        self.log = open(os.path.join(workdir, "server.log"), "ab")
        self.process = subprocess.Popen([*wrapper, BINARY, "serve", "--listen", f"127.0.0.1:{self.port}"], env=env,
                                        stdout=self.log, stderr=self.log)
        for _ in range(200 if not wrapper else 2000):
            try:
                urllib.request.urlopen(self.base + "/readyz").read()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit("the server did not start; see " + self.log.name)
                time.sleep(0.05)
        raise SystemExit("the server did not become ready")

    def rss_kib(self):
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Receiver:
    """A webhook receiver on loopback that answers 204 and counts."""

    def __init__(self):
        import http.server

        outer = self
        self.count = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.count += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


class MockProvider:
    """examples/mock_provider.rs on loopback: `/{chunks}/{interval_ms}/v1` is a provider's base URL."""

    def __init__(self, workdir):
        self.log = open(os.path.join(workdir, "mock.log"), "ab")
        self.process = subprocess.Popen([os.path.join(EXAMPLES, "mock_provider"), "127.0.0.1:0"],
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.process.stdout.readline()
        self.base = "http://" + line.split()[-1]

    def stop(self):
        self.process.kill()
        self.process.wait()


class Direct:
    """wrk pointed at `base` (the mock) while the server's memory is still what is sampled."""

    def __init__(self, base, server):
        self.base, self.server, self.process = base, server, server.process

    def rss_kib(self):
        return self.server.rss_kib()


def seed(api, users, conversations):
    session = api.call("POST", "/v1/auth/login", {"email": EMAIL, "password": PASSWORD})
    access = session["access"]
    app = api.call("POST", "/v1/applications", {"name": "bench"}, access)
    agent = api.call("POST", f"/v1/applications/{app['id']}/agents",
                     {"name": "echo", "instructions": "Repeat.", "memory": True}, access)
    key = api.call("POST", f"/v1/applications/{app['id']}/authentication-keys",
                   {"name": "bench", "scope": {"all_agents": True}}, access)
    tokens = []
    for u in range(users):
        token = user_token(key["id"], key["secret"], f"user-{u}")
        tokens.append(token)
        for c in range(conversations):
            for turn in range(2):
                api.call("POST", f"/v1/agents/{agent['id']}/completions",
                         {"messages": [{"role": "user", "content": f"question {turn} of conversation {c}"}],
                          "conversation_id": f"c{c}"}, token)
        for text in ("likes green tea", "works in Lisbon", "prefers short answers"):
            api.call("POST", "/v1/memories", {"content": f"user {u} {text}"}, token)
    return app, agent, key, tokens, access


# What "guarded" turns on: a listed browser origin and per-user limits too high to be reached, so
# the workload measures the cost of checking them (origin match, GCRA per user, the quota read).
GUARD_ORIGIN = "https://bench.example.com"
GUARD_SETTINGS = {"allowed_origins": [GUARD_ORIGIN],
                  "limits": {"user_requests_per_minute": 1_000_000, "user_completions_per_minute": 1_000_000,
                             "user_tokens_per_day": 10**12}}

LUA = r"""
local tokens = {}
local method, path, body = "%(method)s", "%(path)s", %(body)s
init = function(args)
  for line in io.lines("%(tokens)s") do tokens[#tokens + 1] = line end
end
request = function()
  local i = math.random(#tokens)
  local headers = { ["authorization"] = "Bearer " .. tokens[i] }
  if "%(origin)s" ~= "" then headers["origin"] = "%(origin)s" end
  local p = string.gsub(path, "{u}", tostring(i - 1))
  local b = body
  if b then
    headers["content-type"] = "application/json"
    b = string.gsub(b, "{u}", tostring(i - 1))
  end
  return wrk.format(method, p, headers, b)
end
"""


def seconds(text):
    number, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


class PeakRss:
    """Samples the server's resident memory while the block runs: `before` and `peak` (KiB)."""

    def __init__(self, server, every=0.05):
        self.server, self.every = server, every

    def __enter__(self):
        self.before = self.peak = self.server.rss_kib()
        self.done = threading.Event()
        self.sampler = threading.Thread(target=self.sample)
        self.sampler.start()
        return self

    def sample(self):
        while not self.done.is_set():
            self.peak = max(self.peak, self.server.rss_kib())
            time.sleep(self.every)

    def __exit__(self, *exc):
        self.done.set()
        self.sampler.join()


def postgres_pids():
    """Every PostgreSQL server process on this host (backends, WAL writer, checkpointer...)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and open(f"/proc/{entry}/comm").read().strip() == "postgres":
                pids.append(int(entry))
        except OSError:
            pass
    return pids


class CpuPerRequest:
    """The CPU each process of a workload spends while the block runs: Confidant, the database
    server's processes (PostgreSQL; SQLite runs inside Confidant), the mock when the workload
    calls it, and the load generator (wrk or stream_load, a child of this script). `split(n)`
    turns it into user and system microseconds per request (or per chunk), `per_request(n)` into
    their sum: what each request costs the machine, and who pays."""

    def __init__(self, server, mock=None, database=False):
        self.server, self.mock, self.database = server, mock, database

    def snapshot(self):
        pids = {"confidant": [self.server.process.pid]}
        if self.database:
            pids["postgres"] = postgres_pids()
        if self.mock:
            pids["mock"] = [self.mock.process.pid]
        seconds = {}
        for name, group in pids.items():
            user = system = 0.0
            for pid in group:
                try:
                    u, s = cpu_seconds(pid)
                except OSError:
                    continue  # a process that ended meanwhile
                user, system = user + u, system + s
            seconds[name] = (user, system)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds["load generator"] = (children.ru_utime, children.ru_stime)
        return seconds

    def __enter__(self):
        self.before = self.snapshot()
        return self

    def __exit__(self, *exc):
        self.after = self.snapshot()

    def split(self, count):
        per = lambda now, then: round((now - then) * 1e6 / max(count, 1), 1)
        return {name: {"user": per(user, self.before.get(name, (0.0, 0.0))[0]),
                       "system": per(system, self.before.get(name, (0.0, 0.0))[1])}
                for name, (user, system) in self.after.items()}

    def per_request(self, count):
        return {name: round(c["user"] + c["system"], 1) for name, c in self.split(count).items()}


def run_wrk(server, workdir, name, method, path, body, tokens_file, duration, connections, origin="",
            mock=None, database=False):
    script = os.path.join(workdir, f"{name}.lua")
    with open(script, "w") as f:
        f.write(LUA % {"method": method, "path": path, "tokens": tokens_file, "origin": origin,
                       "body": "nil" if body is None else "[[" + json.dumps(body) + "]]"})
    with PeakRss(server) as rss, CpuPerRequest(server, mock, database) as cpu:
        out = subprocess.run(["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}s", "--latency",
                              "-s", script, server.base], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = seconds(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = seconds(re.search(r"\s99%\s+(\S+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {"workload": name, "requests": total, "rps": round(rps), "p50_ms": round(p50 * 1000, 2),
            "p99_ms": round(p99 * 1000, 2), "errors": errors, "peak_rss_mib": round(rss.peak / 1024, 1),
            "cpu_us_per_request": cpu.per_request(total)}


def seed_messages(db_path, app_id, agent_id, total, users):
    """Bulk-inserts `total` messages (in 1,000-message conversations) straight into SQLite. They
    belong to the benchmark's own users and agent, so the queries measured afterwards run over
    users who each own ~total/users messages."""
    connection = sqlite3.connect(db_path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    app, agent = uuid.UUID(app_id).bytes, uuid.UUID(agent_id).bytes
    per_conversation = 1000
    now = int(time.time() * 1e6)
    started = time.time()
    for first in range(0, total, per_conversation):
        sub = f"user-{(first // per_conversation) % max(users, 1)}"
        conversation = uuid.uuid4().bytes
        count = min(per_conversation, total - first)
        # Older than the seeded conversations, so "list" still shows those first.
        connection.execute(
            "INSERT INTO conversations (id, application_id, sub, external_id, agent_id, title, created_at, updated_at, last_seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (conversation, app, sub, f"bulk-{first}", agent, "bulk", now - 10**9 - first, now - 10**9 - first, count))
        connection.executemany(
            "INSERT INTO messages (id, conversation_id, application_id, sub, seq, role, content, status, client_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'complete', NULL, ?)",
            ((uuid.uuid4().bytes, conversation, app, sub, i + 1, "user" if i % 2 == 0 else "assistant",
              "a stored message of ordinary length for the scale benchmark", now - first)
             for i in range(count)))
        if first % 1_000_000 == 0 and first:
            connection.commit()
            print(f"  {first:,} messages ({time.time() - started:.0f} s)", flush=True)
    connection.commit()
    connection.close()
    print(f"  {total:,} messages in {time.time() - started:.0f} s", flush=True)


def compare(rows):
    """Each row against what the contract measures it against: the list against the /healthz
    ceiling, PostgreSQL against SQLite, the stateless turn against the mock called directly, the
    stored turn through the mock against the echo turn."""
    by = {(r["database"], r["workload"]): r for r in rows}
    for r in rows:
        db, name = r["database"], r["workload"]
        ceiling = by.get((db, HEALTHZ))
        if name in (LIST, "get one conversation", "guarded list (origin, limits)") and ceiling:
            r["vs"] = f"{r['rps'] / ceiling['rps']:.0%} of /healthz"
        if name == "guarded list (origin, limits)" and (db, LIST) in by:
            r["vs"] = ", ".join(filter(None, [r.get("vs"), f"{r['rps'] / by[(db, LIST)]['rps'] - 1:+.0%} vs list"]))
        if name == STATELESS and (db, DIRECT) in by:
            r["vs"] = f"+{r['p50_ms'] - by[(db, DIRECT)]['p50_ms']:.2f} ms p50 over direct"
        if name == STORED_MOCK and (db, ECHO_TURN) in by:
            r["vs"] = f"{r['rps'] / by[(db, ECHO_TURN)]['rps']:.0%} of the echo turn"
        if db == "postgres" and ("sqlite", name) in by and by[("sqlite", name)]["rps"] and not name.startswith(STREAMS):
            ratio = f"{r['rps'] / by[('sqlite', name)]['rps']:.2f}x sqlite"
            r["vs"] = f"{r['vs']}, {ratio}" if r.get("vs") else ratio


def table(rows):
    header = (f"{'database':<10} {'workload':<37} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
              f"{'peak RSS MiB':>13}  against")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['database']:<10} {r['workload']:<37} {r['rps']:>9,} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                     f"{r['errors']:>7} {r['peak_rss_mib']:>13.1f}  {r.get('vs', '')}")
    return "\n".join(lines)


CPU_COLUMNS = ("confidant", "postgres", "mock", "load generator")


def cpu_table(rows):
    """Who pays for a request: CPU µs (user + system) per request of each process, and the cores
    their sum needs at the measured rate (the machine has os.cpu_count())."""
    header = f"{'database':<10} {'workload':<37} " + " ".join(f"{c:>14}" for c in CPU_COLUMNS) + f" {'cores used':>11}"
    lines = ["CPU per request (µs, user + system), by process", header, "-" * len(header)]
    for r in rows:
        cpu = r.get("cpu_us_per_request")
        if not cpu:
            continue
        cells = " ".join(f"{cpu[c]:>14.1f}" if c in cpu else f"{'':>14}" for c in CPU_COLUMNS)
        cores = sum(cpu.values()) * r["rps"] / 1e6
        lines.append(f"{r['database']:<10} {r['workload']:<37} {cells} {cores:>11.2f}")
    return "\n".join(lines)


HEALTHZ = "/healthz (the ceiling)"
LIST = "list my conversations"
ECHO_TURN = "completion turn (echo)"
DIRECT = "mock provider direct (1 connection)"
STATELESS = "stateless turn via mock (1 conn)"
STORED_MOCK = "stored turn via mock"
STREAMS = "many paced streams"
# The mock's pace for the many streams: a chunk every 50 ms, 20 a second.
PACED_MS = 50


def cpu_seconds(pid):
    """User and system CPU seconds a running process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def many_streams(server, mock, workdir, tokens_file, agent_id, streams, args):
    """`streams` streaming turns at once, each paced by the mock for `args.stream_seconds`. Also
    counts the CPU each process spends per chunk (Confidant, the mock, the load generator): at
    20 chunks a second a stream, their sum says how many cores the workload needs."""
    body = json.dumps({"messages": [{"role": "user", "content": "count slowly"}],
                       "conversation_id": "stream-{i}", "stream": True})
    with PeakRss(server, every=0.2) as rss, CpuPerRequest(server, mock) as spent:
        out = subprocess.run([os.path.join(EXAMPLES, "stream_load"), f"{server.base}/v1/agents/{agent_id}/completions",
                              tokens_file, str(streams), body], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"stream_load failed: {out.stderr}")
    result = json.loads(out.stdout)
    cpu = spent.split(result["chunks_stamped"])
    total_us = sum(c["user"] + c["system"] for c in cpu.values())
    cores = total_us * streams * 1000 / PACED_MS / 1e6
    result["cpu_us_per_chunk"] = cpu
    return {"workload": f"{STREAMS} ({streams:,})", "requests": result["streams"], "rps": 0,
            "p50_ms": result["chunk_delay_p50_ms"], "p99_ms": result["chunk_delay_p99_ms"],
            "errors": result["failed"], "peak_rss_mib": round(rss.peak / 1024, 1), "streams": result,
            "vs": (f"{result['completed']}/{result['streams']} completed in {result['elapsed_s']:.0f} s; "
                   f"headers after {result['headers_p50_s']:.1f}/{result['headers_p99_s']:.1f} s p50/p99; "
                   f"p50/p99 are the delay per chunk; {(rss.peak - rss.before) / max(result['streams'], 1):.0f} KiB per stream "
                   f"over the {rss.before / 1024:.0f} MiB before; CPU per chunk (user + system µs): "
                   + ", ".join(f"{name} {c['user'] + c['system']:.0f}" for name, c in cpu.items())
                   + f", so {cores:.1f} cores for {streams * 1000 // PACED_MS:,} chunks/s on {os.cpu_count()}"
                   + "".join(f"; {n} failed: {why}" for why, n in result.get("failures", {}).items()))}


def bench_database(label, database_url, workdir, args, sqlite_path=None):
    master_key = base64.b64encode(os.urandom(32)).decode()
    server = Server(database_url, workdir, master_key)
    rows = []
    try:
        api = Api(server.base)
        print(f"[{label}] seeding {args.users} users x {args.conversations} conversations ...", flush=True)
        app, agent, _, tokens, access = seed(api, args.users, args.conversations)
        if database_url.startswith("postgres"):
            # A database in service has statistics (autovacuum analyzes what changes); one
            # filled a moment ago has none, and its plans are guesses (get one conversation
            # read every message of the user's, not only the conversation's, before this).
            subprocess.run(["psql", database_url, "-qc", "ANALYZE"], check=True)
        tokens_file = os.path.join(workdir, "tokens.txt")
        with open(tokens_file, "w") as f:
            f.write("\n".join(tokens) + "\n")
        a = agent["id"]
        mock = MockProvider(workdir)
        fast = api.call("POST", f"/v1/applications/{app['id']}/providers",
                        {"name": "mock", "kind": "openai-compatible", "base_url": f"{mock.base}/50/0/v1"}, access)
        api.call("POST", f"/v1/applications/{app['id']}/providers",
                 {"name": "paced", "kind": "openai-compatible",
                  "base_url": f"{mock.base}/{args.stream_seconds * 1000 // PACED_MS}/{PACED_MS}/v1"}, access)
        mock_agent = api.call("POST", f"/v1/applications/{app['id']}/agents",
                              {"name": "mock", "model": {"provider": fast["name"], "model": "mock"}}, access)["id"]
        paced_agent = api.call("POST", f"/v1/applications/{app['id']}/agents",
                               {"name": "paced", "model": {"provider": "paced", "model": "mock"}}, access)["id"]
        completions_key = api.call("POST", f"/v1/applications/{app['id']}/api-keys",
                                   {"name": "bench", "acl": ["completions"]}, access)["key"]
        key_file = os.path.join(workdir, "api-key.txt")
        with open(key_file, "w") as f:
            f.write(completions_key + "\n")
        chat = {"messages": [{"role": "user", "content": "hello mock"}], "stream": True}
        workloads = [
            (HEALTHZ, "GET", "/healthz", None),
            ("list my conversations", "GET", f"/v1/agents/{a}/conversations", None),
            # Right after the list, over the same rows (the turns below add conversations to the
            # list): the application's origins and limits on, then off again.
            ("guarded list (origin, limits)", "GET", f"/v1/agents/{a}/conversations", None),
            ("get one conversation", "GET", f"/v1/agents/{a}/conversations/c0", None),
            ("completion turn (echo)", "POST", f"/v1/agents/{a}/completions",
             {"messages": [{"role": "user", "content": "hello benchmark"}], "conversation_id": "turns"}),
            ("streamed turn (echo, SSE)", "POST", f"/v1/agents/{a}/completions?stream=true",
             {"messages": [{"role": "user", "content": "hello streamed benchmark reply"}], "conversation_id": "streams"}),
            ("memory search", "GET", "/v1/memories?q=green%20tea", None),
            # In front of the mock: its own latency, what Confidant adds, and a stored turn.
            (DIRECT, "POST", f"@mock/50/0/v1/chat/completions", dict(chat, model="mock")),
            (STATELESS, "POST", f"/v1/agents/{mock_agent}/completions", chat),
            (STORED_MOCK, "POST", f"/v1/agents/{mock_agent}/completions",
             {"messages": [{"role": "user", "content": "hello mock"}], "conversation_id": "mocked"}),
            ("guarded turn (origin, limits, quota)", "POST", f"/v1/agents/{a}/completions",
             {"messages": [{"role": "user", "content": "hello benchmark"}], "conversation_id": "guarded"}),
            # Last again: a webhook receiving every event, so each turn also writes its
            # message.completed (and each user's first, conversation.created) to the outbox.
            ("webhooked turn (guarded + webhook)", "POST", f"/v1/agents/{a}/completions",
             {"messages": [{"role": "user", "content": "hello benchmark"}], "conversation_id": "hooked"}),
        ]
        workloads = [w for w in workloads if not args.only or w[0].split()[0] in args.only]
        guarded = False
        receiver = None
        for name, method, path, body in workloads:
            origin = ""
            if name.startswith("webhooked"):
                receiver = Receiver()
                api.call("POST", f"/v1/applications/{app['id']}/webhooks",
                         {"url": receiver.url, "events": ["conversation.created", "message.completed"]}, access)
            guard = name.startswith(("guarded", "webhooked"))
            if guard != guarded:
                api.call("PATCH", f"/v1/applications/{app['id']}", GUARD_SETTINGS if guard else GUARD_OFF, access)
                guarded = guard
            if guard:
                origin = GUARD_ORIGIN
            connections, tokens, target = args.connections, tokens_file, server
            if name in (DIRECT, STATELESS):
                connections, tokens = 1, key_file
            if path.startswith("@mock"):
                target, path = Direct(mock.base, server), path[len("@mock"):]
            print(f"[{label}] {name} ({args.duration} s, {connections} connections) ...", flush=True)
            key = "-".join(name.split()[:2]).replace("/", "")
            row = run_wrk(target, workdir, key, method, path, body, tokens, args.duration, connections, origin,
                          mock=mock if name in (DIRECT, STATELESS, STORED_MOCK) else None,
                          database=label == "postgres")
            row.update(workload=name, database=label)
            if receiver:
                row["webhooks_received"] = receiver.count
            rows.append(row)
        if receiver:
            receiver.stop()
        if not args.only or "streams" in args.only:
            for streams in args.streams:
                # Each count on a server just started, so what one run leaves in its allocator
                # (and what the workloads above left) is not counted as the next run's "before".
                server.stop()
                server = Server(database_url, workdir, master_key)
                # Warmed by 50 streams through the fast mock first: the code a stream runs is
                # paged back in (the server gives back its startup code), not counted per stream.
                subprocess.run([os.path.join(EXAMPLES, "stream_load"), f"{server.base}/v1/agents/{mock_agent}/completions",
                                tokens_file, "50"], capture_output=True, check=True)
                print(f"[{label}] {streams} streams paced for {args.stream_seconds} s ...", flush=True)
                row = many_streams(server, mock, workdir, tokens_file, paced_agent, streams, args)
                row.update(database=label)
                rows.append(row)
        mock.stop()
        if args.scale and sqlite_path:
            server.stop()
            print(f"[{label}] scale: seeding {args.messages:,} messages ...", flush=True)
            seed_messages(sqlite_path, app["id"], a, args.messages, args.users)
            server = Server(database_url, workdir, master_key)
            for name, method, path in [("list my conversations", "GET", f"/v1/agents/{a}/conversations"),
                                       ("get one conversation", "GET", f"/v1/agents/{a}/conversations/c0")]:
                print(f"[{label}+{args.messages / 1e6:g}M] {name} ...", flush=True)
                row = run_wrk(server, workdir, name.split()[0], method, path, None, tokens_file, args.duration, args.connections)
                row.update(workload=name, database=f"{label}+{args.messages / 1e6:g}M")
                rows.append(row)
    finally:
        server.stop()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", metavar="URL", help="also run against this PostgreSQL database (it is wiped)")
    parser.add_argument("--postgres-only", action="store_true", help="with --postgres: skip the SQLite run")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--conversations", type=int, default=3, help="per user")
    parser.add_argument("--duration", type=int, default=10, help="seconds per workload")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", nargs="*",
                        help="only these workloads (first words): /healthz, list, get, completion, streamed, memory, "
                             "mock, stateless, stored, guarded, webhooked, streams")
    parser.add_argument("--streams", default="5000,2000",
                        help="simultaneous paced streams, one run for each count (0: skip): the contract's 5,000, "
                             "and 2,000, about what this 2-core machine can carry with the mock and the load generator")
    parser.add_argument("--stream-seconds", type=int, default=30, help="how long the mock paces each stream")
    parser.add_argument("--instructions", action="store_true",
                        help="also count the guard's cost per list under callgrind (valgrind; a few minutes)")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL even when it is reachable")
    parser.add_argument("--scale", action="store_true", help="then seed --messages messages and measure list/get again")
    parser.add_argument("--messages", type=int, default=10_000_000)
    args = parser.parse_args()
    if not os.path.exists(BINARY):
        raise SystemExit(f"{BINARY} is missing: run `cargo build --release` (make bench does)")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: `apt-get install wrk` (make bench does)")
    random.seed(7)
    # 5,000 streams hold 10,000 sockets in the server (its clients and the mock) and 5,000 in
    # each of the mock and the load generator: raise the soft limit to the hard one.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.streams = [int(n) for n in str(args.streams).split(",") if int(n) > 0]
    for i, streams in enumerate(args.streams):
        if streams * 2 + 500 > hard:
            print(f"!! the open-file limit ({hard}) is too low for {streams} streams: fewer will be run", flush=True)
            args.streams[i] = max(0, (hard - 500) // 2)
    if not args.postgres and not args.no_postgres:
        args.postgres = bench_postgres()
    elif args.postgres:
        # A database given that cannot be emptied fails now, not after the SQLite half of the run.
        reset_postgres(args.postgres)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        sqlite_path = os.path.join(workdir, "bench.db")
        if not (args.postgres_only and args.postgres):
            rows += bench_database("sqlite", f"sqlite://{sqlite_path}", workdir, args, sqlite_path)
        if args.postgres:
            reset_postgres(args.postgres)
            rows += bench_database("postgres", args.postgres, workdir, args)
        if args.instructions:
            print("[sqlite] the guard's cost, counted under callgrind ...", flush=True)
            rows.append(guard_instructions(workdir))
    compare(rows)
    print()
    print(table(rows))
    if any("cpu_us_per_request" in r for r in rows):
        print()
        print(cpu_table(rows))
    os.makedirs(os.path.join(ROOT, "results"), exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(ROOT, "results", f"bench-{stamp}.json")
    with open(path, "w") as f:
        json.dump({"when": stamp, "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
                   "settings": vars(args),
                   # The service's settings this run was given (e.g. CONFIDANT_SQLITE_LOCKING), no secrets.
                   "environment": {k: v for k, v in os.environ.items() if k.startswith("CONFIDANT_")
                                   and not re.search("KEY|PASSWORD|SECRET|TOKEN", k)},
                   "results": rows}, f, indent=2)
    print(f"\nsaved {os.path.relpath(path, ROOT)}")


GUARD_OFF = {"allowed_origins": [], "limits": {"user_requests_per_minute": None, "user_completions_per_minute": None,
                                              "user_tokens_per_day": None}}


def guard_instructions(workdir, requests=400, rounds=2):
    """What origin checks, limits and usage accounting cost a list, counted rather than timed: the
    server runs under callgrind (instructions are repeatable where 10 s of wrk swing by tens of
    per cent on a shared machine), and `requests` lists are counted with the guard off and on,
    alternately, `rounds` times. System calls are the same either way and are not counted."""
    out = os.path.join(workdir, "callgrind.out")
    server = Server(f"sqlite://{os.path.join(workdir, 'instructions.db')}", workdir,
                    base64.b64encode(os.urandom(32)).decode(),
                    wrapper=("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"))

    def control(*flags):
        subprocess.run(["callgrind_control", *flags, str(server.process.pid)], capture_output=True, check=True)

    counts = {False: [], True: []}
    try:
        api = Api(server.base)
        app, agent, _, tokens, access = seed(api, 10, 3)
        path = f"/v1/agents/{agent['id']}/conversations"
        for _ in range(rounds):
            for guarded in (False, True):
                api.call("PATCH", f"/v1/applications/{app['id']}", GUARD_SETTINGS if guarded else GUARD_OFF, access)
                headers = {"origin": GUARD_ORIGIN} if guarded else {}

                def lists(n):
                    for i in range(n):
                        request = urllib.request.Request(server.base + path, headers={
                            "authorization": "Bearer " + tokens[i % len(tokens)], **headers})
                        if urllib.request.urlopen(request).status != 200:
                            raise SystemExit("a counted list failed")
                lists(20)  # caches warm
                for old in [f for f in os.listdir(workdir) if f.startswith("callgrind.out")]:
                    os.remove(os.path.join(workdir, old))
                control("--zero")
                control("--instr=on")
                lists(requests)
                control("--instr=off")
                control("--dump")
                total = 0
                for name in [f for f in os.listdir(workdir) if f.startswith("callgrind.out")]:
                    with open(os.path.join(workdir, name)) as f:
                        for line in f:
                            if line.startswith(("summary:", "totals:")):
                                total = max(total, int(line.split()[1]))
                counts[guarded].append(total / requests)
    finally:
        server.stop()
    plain, guarded = sum(counts[False]) / rounds, sum(counts[True]) / rounds
    return {"workload": "guard cost (callgrind, per list)", "database": "sqlite", "requests": requests * rounds,
            "rps": 0, "p50_ms": 0, "p99_ms": 0, "errors": 0, "peak_rss_mib": 0,
            "instructions": {"list": round(plain), "guarded_list": round(guarded)},
            "vs": f"{plain:,.0f} -> {guarded:,.0f} instructions, +{(guarded / plain - 1) * 100:.1f} % (system calls not counted)"}


SOCKET_DIR = "/var/run/postgresql"


def bench_postgres():
    """A fresh `confidant_bench` database on the PostgreSQL server the tests use, when it is
    reachable (CONFIDANT_TEST_POSTGRES_URL, as the Makefile sets it); None otherwise."""
    server = os.environ.get("CONFIDANT_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    if not shutil.which("psql"):
        return None
    quiet = dict(os.environ, PGOPTIONS="--client-min-messages=warning")
    for statement in ("DROP DATABASE IF EXISTS confidant_bench WITH (FORCE)", "CREATE DATABASE confidant_bench"):
        if subprocess.run(["psql", server, "-q", "-c", statement], env=quiet, capture_output=True).returncode != 0:
            print(f"PostgreSQL is not reachable at {server}: SQLite only", flush=True)
            return None
    url = server.split("?", 1)[0].rsplit("/", 1)[0] + "/confidant_bench"
    # On the same host, PostgreSQL's Unix socket spares every statement a trip through the
    # loopback TCP stack (measured: get one conversation 6,500 -> 8,500/s); the README says so.
    parsed = urllib.parse.urlsplit(url)
    if parsed.hostname in ("127.0.0.1", "localhost", "::1") and os.path.exists(f"{SOCKET_DIR}/.s.PGSQL.{parsed.port or 5432}"):
        user = parsed.username or "postgres"
        url = f"postgres:///confidant_bench?host={SOCKET_DIR}&port={parsed.port or 5432}&user={user}"
    return url


def reset_postgres(url):
    """Empties the database the URL names (drops and recreates its public schema)."""
    if not shutil.which("psql"):
        raise SystemExit("psql is needed to reset the PostgreSQL database")
    reset = subprocess.run(["psql", url, "-q", "-c", "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"],
                           env=dict(os.environ, PGOPTIONS="--client-min-messages=warning"),
                           capture_output=True, text=True)
    if reset.returncode != 0:
        raise SystemExit(f"cannot empty the PostgreSQL database {url}: {reset.stderr.strip()}")


if __name__ == "__main__":
    sys.exit(main())
