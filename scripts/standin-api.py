#!/usr/bin/env python3
"""A stand-in for the protected API service, for tests and the demo: /health answers 200 while
the process runs; /health/ready answers 200 only while its PostgreSQL takes writes (a primary
that answers), else 503. Usage: standin-api.py PORT DSN (prints "listening on PORT" when up)."""
import http.server
import subprocess
import sys


def database_takes_writes(dsn):
    try:
        out = subprocess.run(
            ["psql", "-X", "-A", "-t", "-d", dsn, "-c", "SELECT NOT pg_is_in_recovery()"],
            capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "t"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            status = 200
        elif self.path == "/health/ready":
            status = 200 if database_takes_writes(self.server.dsn) else 503
        else:
            status = 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    port, dsn = int(sys.argv[1]), sys.argv[2]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.dsn = dsn
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
