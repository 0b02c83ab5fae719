#!/usr/bin/env python3
"""Smoke-check an MCP server that speaks JSON-RPC 2.0 over newline-delimited stdio.

Usage:
  python3 .ci/mcp-smoke.py [options] -- CMD [ARGS...]

Spawns CMD, sends `initialize` (protocolVersion 2025-11-25, capabilities {},
clientInfo {name: vsm-smoke, version: 0}), waits for the response with id 1,
sends `notifications/initialized`, lists every tool (following nextCursor),
prints the negotiated protocolVersion, serverInfo and each tool's name with a
compact JSON of its inputSchema's required/properties, then optionally calls
tools (--call NAME JSON, repeatable), and finally closes the server's stdin and
waits for it to exit (killing it after 5 s).

While waiting for any response it prints every notification the server sends
("<- notification ...") and answers any request the server makes on its own:
`ping` with {} and anything else with JSON-RPC error -32601 ("<- request ...").

Options:
  --call NAME JSON       call tool NAME with arguments JSON (an object); repeatable
  --progress-token TOK   set params._meta.progressToken=TOK on each --call
                         (an integer if TOK looks like one, else a string)
  --linger SECONDS       keep reading (and printing) after the last step before
                         closing stdin (default 0.5)
  --timeout SECONDS      overall deadline (default 60)
  --protocol-version V   protocolVersion to offer (default 2025-11-25)
  --client-capabilities JSON
                         capabilities to declare in initialize (default {})
  --quiet-stderr         do not relay the server's stderr

Exit status: 0 on success; 1 if the handshake, tools/list or a call failed
(JSON-RPC error, isError result, timeout, server exit); 2 on a usage error.
Stdlib only.
"""

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time

PROTOCOL_VERSION = "2025-11-25"


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=False)


class Failure(Exception):
    pass


class Client:
    def __init__(self, argv, deadline, relay_stderr):
        self.t0 = time.monotonic()
        self.deadline = deadline
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
            )
        except OSError as e:
            raise Failure(f"cannot start {argv[0]!r}: {e}")
        self.lines = queue.Queue()
        self.next_id = 1
        self.stdin_open = True
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(relay_stderr,), daemon=True).start()

    def elapsed(self):
        return time.monotonic() - self.t0

    def log(self, msg):
        print(f"[{self.elapsed():6.2f}s] {msg}", flush=True)

    def _read_stdout(self):
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.put(raw)
        self.lines.put(None)  # EOF

    def _read_stderr(self, relay):
        for raw in iter(self.proc.stderr.readline, b""):
            if relay:
                text = raw.decode("utf-8", "replace").rstrip("\n")
                sys.stderr.write(f"[server stderr] {text}\n")
                sys.stderr.flush()

    def send(self, msg):
        data = (compact(msg) + "\n").encode("utf-8")
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise Failure(f"writing to server failed ({e}); server exit code {self.proc.poll()}")

    def _handle_unsolicited(self, msg):
        """A notification or a request from the server."""
        method = msg.get("method")
        if "id" in msg:
            self.log(f"<- request {compact(msg)}")
            if method == "ping":
                reply = {"jsonrpc": "2.0", "id": msg["id"], "result": {}}
            else:
                reply = {
                    "jsonrpc": "2.0",
                    "id": msg["id"],
                    "error": {"code": -32601, "message": f"Method not found: {method}"},
                }
            self.log(f"-> reply {compact(reply)}")
            self.send(reply)
        else:
            self.log(f"<- notification {compact(msg)}")

    def _next_message(self, until):
        """Next parsed message from the server, or None when `until` passes."""
        while True:
            remaining = min(until, self.deadline) - time.monotonic()
            if remaining <= 0:
                if time.monotonic() >= self.deadline:
                    raise Failure("overall deadline reached")
                return None
            try:
                raw = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if raw is None:
                code = self.proc.wait(timeout=5)
                raise Failure(f"server closed its stdout (exit code {code})")
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            try:
                msg = json.loads(text)
            except ValueError:
                self.log(f"<- NON-JSON LINE on stdout: {text[:300]}")
                continue
            if not isinstance(msg, dict):
                self.log(f"<- unexpected (batch?) message: {text[:300]}")
                continue
            return msg

    def request(self, method, params):
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
        self.send(msg)
        while True:
            m = self._next_message(self.deadline)
            if "method" in m:
                self._handle_unsolicited(m)
                continue
            if m.get("id") != rid:
                self.log(f"<- response to unknown id: {compact(m)}")
                continue
            if "error" in m:
                raise Failure(f"{method} failed: {compact(m['error'])}")
            return m.get("result")

    def notify(self, method, params=None):
        msg = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)

    def drain(self, seconds):
        """Read and print whatever the server sends for `seconds`."""
        until = time.monotonic() + seconds
        while True:
            m = self._next_message(until)
            if m is None:
                return
            if "method" in m:
                self._handle_unsolicited(m)
            else:
                self.log(f"<- response to unknown id: {compact(m)}")

    def close(self):
        """Close stdin, wait up to 5 s, then kill. Returns the exit code."""
        if self.stdin_open:
            self.stdin_open = False
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        # 5 s grace, but never past the overall deadline.
        grace = max(0.0, min(5.0, self.deadline - time.monotonic()))
        try:
            return self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.log(f"server still running {grace:.1f} s after stdin closed: killing it")
            self.proc.kill()
            return self.proc.wait()


def main():
    argv = sys.argv[1:]
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        print("error: missing `-- CMD ARGS...`", file=sys.stderr)
        return 2
    split = argv.index("--")
    opts, cmd = argv[:split], argv[split + 1:]
    if not cmd:
        print("error: no command after --", file=sys.stderr)
        return 2

    ap = argparse.ArgumentParser(prog="mcp-smoke.py", add_help=True)
    ap.add_argument("--call", nargs=2, action="append", metavar=("NAME", "JSON"), default=[])
    ap.add_argument("--progress-token", default=None)
    ap.add_argument("--linger", type=float, default=0.5)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--protocol-version", default=PROTOCOL_VERSION)
    ap.add_argument("--client-capabilities", default="{}")
    ap.add_argument("--quiet-stderr", action="store_true")
    args = ap.parse_args(opts)

    try:
        client_caps = json.loads(args.client_capabilities)
        if not isinstance(client_caps, dict):
            raise ValueError("not an object")
    except ValueError as e:
        print(f"error: --client-capabilities: {e}", file=sys.stderr)
        return 2
    token = args.progress_token
    if token is not None:
        try:
            token = int(token)
        except ValueError:
            pass

    calls = []
    for name, raw in args.call:
        try:
            arguments = json.loads(raw)
        except ValueError as e:
            print(f"error: --call {name}: arguments are not JSON: {e}", file=sys.stderr)
            return 2
        if not isinstance(arguments, dict):
            print(f"error: --call {name}: arguments must be a JSON object", file=sys.stderr)
            return 2
        calls.append((name, arguments))

    deadline = time.monotonic() + args.timeout
    client = None
    status = 0
    try:
        client = Client(cmd, deadline, not args.quiet_stderr)
        client.log(f"spawned pid {client.proc.pid}: {' '.join(cmd)}")

        init = client.request(
            "initialize",
            {
                "protocolVersion": args.protocol_version,
                "capabilities": client_caps,
                "clientInfo": {"name": "vsm-smoke", "version": "0"},
            },
        )
        if not isinstance(init, dict) or "protocolVersion" not in init:
            raise Failure(f"initialize returned no protocolVersion: {compact(init)}")
        client.log("handshake ok")
        print(f"protocolVersion: {init.get('protocolVersion')}"
              f" (offered {args.protocol_version})")
        print(f"serverInfo: {compact(init.get('serverInfo'))}")
        print(f"capabilities: {compact(init.get('capabilities'))}")
        client.notify("notifications/initialized")

        tools = []
        cursor = None
        pages = 0
        while True:
            params = {} if cursor is None else {"cursor": cursor}
            res = client.request("tools/list", params)
            pages += 1
            tools.extend(res.get("tools", []))
            cursor = res.get("nextCursor")
            if not cursor:
                break
            if pages > 1000:
                raise Failure("tools/list: more than 1000 pages")
        print(f"tools ({len(tools)}, {pages} page(s)):")
        for t in tools:
            schema = t.get("inputSchema") or {}
            summary = {
                "required": schema.get("required", []),
                "properties": schema.get("properties", {}),
            }
            print(f"  {t.get('name')} {compact(summary)}")
        sys.stdout.flush()

        for name, arguments in calls:
            params = {"name": name, "arguments": arguments}
            if token is not None:
                params["_meta"] = {"progressToken": token}
            client.log(f"-> tools/call {compact(params)}")
            started = time.monotonic()
            res = client.request("tools/call", params)
            client.log(f"<- result of {name} after {time.monotonic() - started:.2f}s:")
            print(compact(res))
            if isinstance(res, dict) and res.get("isError"):
                client.log(f"tool {name} returned isError: true")
                status = 1

        if args.linger > 0:
            client.drain(args.linger)
    except Failure as e:
        print(f"mcp-smoke: FAILED: {e}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 1
    finally:
        if client is not None:
            code = client.close()
            client.log(f"server exited with code {code}")
    return status


if __name__ == "__main__":
    sys.exit(main())
