"""One keep-alive HTTP/1.1 connection, N sequential GETs (bench/profile.sh callgrind).

Usage: keepalive_client.py PORT N PATH [HEADER ...]   (HEADER as "Name: value")
Exits non-zero if the connection closes or any response is not 200.
"""
import socket
import sys


def main() -> int:
    port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    extra = "".join(h + "\r\n" for h in sys.argv[4:])
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n{extra}\r\n".encode()
    s = socket.create_connection(("127.0.0.1", port))
    buf = b""
    bad = 0
    for _ in range(n):
        s.sendall(req)
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head = buf[:end].decode("latin-1")
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if len(buf) >= end + 4 + length:
                    if not head.startswith("HTTP/1.1 200"):
                        bad += 1
                    buf = buf[end + 4 + length:]
                    break
            data = s.recv(65536)
            if not data:
                print("the connection closed", file=sys.stderr)
                return 1
            buf += data
    if bad:
        print(f"{bad} of {n} responses were not 200", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
