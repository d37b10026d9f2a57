"""A tiny SQS stand-in for benchmarks: answers SendMessageBatch after a fixed round trip.

``python -m bench.sqs_standin --port 9400 --delay-ms 10`` serves the SQS JSON protocol
(``X-Amz-Target: AmazonSQS.<Action>``) for the two calls a dispatcher makes,
GetQueueUrl and SendMessageBatch, and keeps nothing: every entry is accepted. It runs
in its own process so that its CPU is not counted as the client's, and it costs the
same whatever was sent before, unlike moto, whose every call scans its queue.
"""

import argparse
import hashlib
import json
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from typing_extensions import override


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3's connection pool expects
    disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart
    delay_seconds = 0.0

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        action = (self.headers.get("X-Amz-Target") or "").rpartition(".")[2]
        time.sleep(self.delay_seconds)
        if action == "SendMessageBatch":
            self._answer(200, _send_message_batch(request))
        elif action == "GetQueueUrl":
            host = self.headers.get("Host", "")
            url = f"http://{host}/000000000000/{request['QueueName']}"
            self._answer(200, {"QueueUrl": url})
        else:
            self._answer(400, {"__type": "InvalidAction", "message": f"not served: {action}"})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    @override
    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a benchmark's output is its table."""


def _send_message_batch(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "Successful": [
            {
                "Id": entry["Id"],
                "MessageId": str(uuid.uuid4()),
                "MD5OfMessageBody": hashlib.md5(  # noqa: S324 - SQS's own checksum
                    entry["MessageBody"].encode()
                ).hexdigest(),
            }
            for entry in request.get("Entries", [])
        ],
        "Failed": [],
    }


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=10.0, help="the round trip to fake")
    args = parser.parse_args()
    _Handler.delay_seconds = args.delay_ms / 1000
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
