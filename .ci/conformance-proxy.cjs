// Loopback forwarder for .ci/run-conformance: the daemon's TCP API always needs a bearer
// token and the conformance suite's CLI cannot send one, so this adds
// `Authorization: Bearer $CONFORMANCE_TOKEN` to every request and changes nothing else (the
// Host and Origin headers go through as the suite sent them, so its DNS-rebinding scenario
// still meets the daemon's own checks). Responses, SSE streams included, are piped back as
// they come. argv: UPSTREAM (host:port). Prints {"port": N} once listening on 127.0.0.1.
"use strict";
const http = require("http");

const [host, port] = (process.argv[2] || "").split(":");
const token = process.env.CONFORMANCE_TOKEN || "";
if (!host || !port || !token) {
  process.stderr.write("usage: CONFORMANCE_TOKEN=T conformance-proxy.cjs HOST:PORT\n");
  process.exit(2);
}

const server = http.createServer((req, res) => {
  const headers = { ...req.headers, authorization: `Bearer ${token}` };
  const up = http.request({ host, port: Number(port), method: req.method, path: req.url, headers }, (ur) => {
    res.writeHead(ur.statusCode || 502, ur.headers);
    ur.pipe(res);
  });
  up.on("error", (e) => {
    process.stderr.write(`${req.method} ${req.url}: ${e.message}\n`);
    if (!res.headersSent) {
      res.writeHead(502, { "content-type": "text/plain" });
    }
    res.end(`proxy: ${e.message}\n`);
  });
  // A client that goes away takes its upstream request with it (an SSE stream ends).
  res.on("close", () => up.destroy());
  req.pipe(up);
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
