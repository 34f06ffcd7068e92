"""moto's server with one request at a time.

DynamoDB applies each request (an ADD, a conditional write, a transaction) atomically; moto's
threaded server does not, so concurrent tests could lose an update that AWS never would.
Serialising requests restores that guarantee; connections are still accepted concurrently.
Usage: python moto_server.py PORT
"""

import os
import sys
import threading

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    port = int(sys.argv[1])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialised(environ, start_response):
        with lock:
            # Drain the body inside the lock: the work happens while it is produced.
            return list(app(environ, start_response))

    run_simple("127.0.0.1", port, serialised, threaded=True)


if __name__ == "__main__":
    main()
