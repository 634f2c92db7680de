"""A small authoritative DNS server for tests (dnslib), on UDP and TCP of one loopback port.

Records come from zone text (``mx.test. 60 IN A 127.0.0.1``) or a dict ``{name: {type: [rdata]}}``.
Names listed in ``timeout_names`` get no answer at all; names in ``servfail_names`` get SERVFAIL.
A name with no records of the asked type gets NOERROR with an empty answer; an unknown name NXDOMAIN.
"""

from __future__ import annotations

import contextlib
import socketserver
import struct
import threading

from dnslib import QTYPE, RCODE, RR, DNSRecord


def _norm(name: str) -> str:
    return name.lower().rstrip(".") + "."


class DnsServer:
    def __init__(self, zone: str = "", records: dict[str, dict[str, list[str]]] | None = None, *,
                 timeout_names: set[str] | None = None, servfail_names: set[str] | None = None,
                 host: str = "127.0.0.1"):
        self.host = host
        self.port = 0
        self.rrs: list[RR] = []
        self.timeout_names = {_norm(n) for n in timeout_names or ()}
        self.servfail_names = {_norm(n) for n in servfail_names or ()}
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        if zone:
            self.add_zone(zone)
        for name, types in (records or {}).items():
            for rtype, values in types.items():
                for value in values:
                    self.add_zone(f"{_norm(name)} 60 IN {rtype} {value}")
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    def add_zone(self, zone: str) -> None:
        """Add records from zone text (leading blanks of each line are ignored)."""
        text = "\n".join(line.strip() for line in zone.splitlines())
        with self.lock:
            self.rrs.extend(RR.fromZone(text))

    def answer(self, data: bytes) -> bytes | None:
        """The reply to a query packet, or None to stay silent."""
        request = DNSRecord.parse(data)
        qname = _norm(str(request.q.qname))
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((qname, qtype))
            if qname in self.timeout_names:
                return None
            reply = request.reply()
            if qname in self.servfail_names:
                reply.header.rcode = RCODE.SERVFAIL
                return reply.pack()
            known = [rr for rr in self.rrs if _norm(str(rr.rname)) == qname]
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        for rr in known:
            if QTYPE[rr.rtype] == qtype or qtype == "ANY":
                reply.add_answer(rr)
        return reply.pack()

    def start(self) -> DnsServer:
        owner = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                with contextlib.suppress(Exception):
                    out = owner.answer(data)
                    if out is not None:
                        sock.sendto(out, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(5)
                with contextlib.suppress(Exception):
                    head = self.request.recv(2)
                    if len(head) < 2:
                        return
                    length = struct.unpack("!H", head)[0]
                    data = b""
                    while len(data) < length:
                        chunk = self.request.recv(length - len(data))
                        if not chunk:
                            return
                        data += chunk
                    out = owner.answer(data)
                    if out is not None:
                        self.request.sendall(struct.pack("!H", len(out)) + out)

        class UdpServer(socketserver.ThreadingUDPServer):
            daemon_threads = True

        class TcpServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        for _ in range(20):
            udp = UdpServer((self.host, 0), Udp)
            port = udp.server_address[1]
            try:
                tcp = TcpServer((self.host, port), Tcp)
            except OSError:
                udp.server_close()
                continue
            self.port = port
            self._servers = [udp, tcp]
            break
        else:
            raise RuntimeError("no free port for UDP and TCP together")
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["DnsServer"]
