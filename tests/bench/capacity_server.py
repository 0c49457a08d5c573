"""The capture-capacity server of `cargo xtask bench`: the fastest HTTP/1.1 Python can serve, so that the load
on fmd-daemon is limited by the daemon rather than by Flask. A master binds the port and forks N workers
(as gunicorn does, so fmd attaches to the master and watches the workers); each worker answers every request
on a kept-alive connection with a fixed 200 from an asyncio protocol.

    python capacity_server.py PORT WORKERS

Used only for this measurement: it reads GET requests without bodies and nothing else, and closes a
connection only when asked to (`Connection: close`).
"""
import asyncio
import os
import signal
import socket
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.pending = b""

    def data_received(self, data):
        self.pending += data
        while True:
            end = self.pending.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.pending = self.pending[:end], self.pending[end + 4:]
            self.transport.write(RESPONSE)
            if b"connection: close" in head.lower():
                self.transport.close()
                return


def serve(sock):
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(Http, sock=sock, backlog=4096))
    loop.run_forever()


def main():
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    sock.setblocking(False)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            serve(sock)
            os._exit(0)
        children.append(pid)

    def stop(_signum, _frame):
        for child in children:
            os.kill(child, signal.SIGKILL)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(s, stop)
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue


if __name__ == "__main__":
    main()
