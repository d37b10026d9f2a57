"""The end-to-end settings, with the dispatcher's SQS endpoint a proxy in the process's
own thread: every call goes on to the test's SQS server but ``SendMessageBatch``, which
is never answered (SQS stuck on sends). Celery's broker stays the test's SQS server."""

import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.settings_fast import *  # noqa: F403
from tests.settings_fast import SCHEDULER_SQS_ENDPOINT_URL, SILENCED_SYSTEM_CHECKS

_UPSTREAM = SCHEDULER_SQS_ENDPOINT_URL
_HOP_BY_HOP = {"connection", "content-length", "host", "transfer-encoding"}


class _StuckOnSends(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if "SendMessageBatch" in self.headers.get("X-Amz-Target", ""):
            time.sleep(3600)  # the client's read timeout, then its retries, end first
            return
        request = urllib.request.Request(
            f"{_UPSTREAM}{self.path}",
            data=body,
            method="POST",
            headers={k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP},
        )
        try:
            with urllib.request.urlopen(request) as answer:
                status, headers, data = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            status, headers, data = error.code, error.headers, error.read()
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


_proxy = ThreadingHTTPServer(("127.0.0.1", 0), _StuckOnSends)
_proxy.daemon_threads = True
threading.Thread(target=_proxy.serve_forever, daemon=True).start()
SCHEDULER_SQS_ENDPOINT_URL = f"http://127.0.0.1:{_proxy.server_address[1]}"
# The broker's endpoint differs on purpose: no worker is to run the jobs.
SILENCED_SYSTEM_CHECKS = [*SILENCED_SYSTEM_CHECKS, "scheduler.E025"]
