#!/usr/bin/env python3
"""A tiny receiver for `http:` handlers: answers each POSTed task with
{"received": <the task>, "signature_ok": <bool>}. Used by the README's
handler walk-through; the secret must match the worker's config."""
import hashlib
import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = b"demo-secret-change-me"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        want = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        answer = json.dumps({
            "received": json.loads(body),
            "signature_ok": hmac.compare_digest(want, self.headers.get("swf-signature", "")),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8099
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
