import Foundation
import Synchronization
import TestSupport

@testable import EgressFilter

/// A simulated internet in network namespaces of the test's own (root):
///
///     client netns  eth0 198.19.K.2 (+ .3 unregistered, + .4 a second sandbox)
///        |  veth  sseC<pid> 198.19.K.1  ← the filter binds here; a test-owned nftables
///        |        table redirects 53/80/443 arriving on this veth to its ports
///     host (test process, the filter)
///        |  veth  sseI<pid> 198.18.K.1
///     inet netns    eth0 198.18.K.53 (DNS), .10 (allowed.test: HTTP+HTTPS), .20 (decoy:
///                   HTTP+HTTPS, logs every request), .30 (HTTP, for a cidr rule)
///
/// ip_forward stays as the host has it; the filter is the only path between the two
/// namespaces for what the test checks. `close()` removes every namespace, veth, table,
/// process and file it made, whatever failed.
final class SimulatedInternet: @unchecked Sendable {
    let pid = getpid()
    let k: Int
    let inetNS: String
    let clientNS: String
    let inetVeth: String
    let clientVeth: String
    let table: String
    let dir: String
    var servers: ClientProcess?
    var background: [ClientProcess] = []
    var madeEtcNetns = false
    var netnsEtc: String { "/etc/netns/\(clientNS)" }
    let ip = Harness.find("ip") ?? "/usr/sbin/ip"
    let nft = Harness.find("nft") ?? "/usr/sbin/nft"
    let python = Harness.find("python3") ?? "/usr/bin/python3"

    var hostAddress: String { "198.19.\(k).1" }
    var clientAddress: String { "198.19.\(k).2" }
    var unknownAddress: String { "198.19.\(k).3" }
    var secondAddress: String { "198.19.\(k).4" }
    var dnsServer: String { "198.18.\(k).53" }
    var allowedServer: String { "198.18.\(k).10" }
    var decoyServer: String { "198.18.\(k).20" }
    var cidrServer: String { "198.18.\(k).30" }

    struct Failure: Error, CustomStringConvertible { var description: String }

    init() throws {
        k = Int(pid % 200) + 20
        inetNS = "ssef-inet-\(pid)"
        clientNS = "ssef-cli-\(pid)"
        inetVeth = "sseI\(pid % 100000)"
        clientVeth = "sseC\(pid % 100000)"
        table = "ssef_\(pid)"
        dir = try Harness.tempDir("egress")
    }

    @discardableResult
    func must(_ path: String, _ args: [String], timeout: Double = 60) throws -> Harness.Result {
        let result = try Harness.run(path, args, timeout: timeout)
        guard result.status == 0 else {
            throw Failure(
                description: "\(path) \(args.joined(separator: " ")): status \(result.status): \(result.stderr)")
        }
        return result
    }

    func inClient(_ args: [String], timeout: Double = 60) throws -> Harness.Result {
        try Harness.run(ip, ["netns", "exec", clientNS] + args, timeout: timeout)
    }

    /// The client helper (cli.py) in the client namespace.
    func client(_ args: [String], timeout: Double = 60) throws -> Harness.Result {
        try inClient([python, dir + "/cli.py"] + args, timeout: timeout)
    }

    func up() throws {
        try must(ip, ["netns", "add", inetNS])
        try must(ip, ["netns", "add", clientNS])
        try must(ip, ["link", "add", inetVeth, "type", "veth", "peer", "name", "eth0", "netns", inetNS])
        try must(ip, ["link", "add", clientVeth, "type", "veth", "peer", "name", "eth0", "netns", clientNS])
        try must(ip, ["addr", "add", "198.18.\(k).1/24", "dev", inetVeth])
        try must(ip, ["link", "set", inetVeth, "up"])
        try must(ip, ["addr", "add", "\(hostAddress)/24", "dev", clientVeth])
        try must(ip, ["link", "set", clientVeth, "up"])
        for a in [dnsServer, allowedServer, decoyServer, cidrServer] {
            try must(ip, ["-n", inetNS, "addr", "add", "\(a)/24", "dev", "eth0"])
        }
        for a in [clientAddress, unknownAddress, secondAddress] {
            try must(ip, ["-n", clientNS, "addr", "add", "\(a)/24", "dev", "eth0"])
        }
        for ns in [inetNS, clientNS] {
            try must(ip, ["-n", ns, "link", "set", "lo", "up"])
            try must(ip, ["-n", ns, "link", "set", "eth0", "up"])
        }
        try must(ip, ["-n", inetNS, "route", "add", "default", "via", "198.18.\(k).1"])
        try must(ip, ["-n", clientNS, "route", "add", "default", "via", hostAddress])
        madeEtcNetns = !FileManager.default.fileExists(atPath: "/etc/netns")
        try FileManager.default.createDirectory(atPath: netnsEtc, withIntermediateDirectories: true)
        try "nameserver \(hostAddress)\noptions timeout:3 attempts:1\n".write(
            toFile: netnsEtc + "/resolv.conf", atomically: true, encoding: .utf8)
        try Self.serversPy.write(toFile: dir + "/servers.py", atomically: true, encoding: .utf8)
        try Self.clientPy.write(toFile: dir + "/cli.py", atomically: true, encoding: .utf8)
        try must(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem",
                "-days", "1", "-subj", "/CN=allowed.test", "-addext", "subjectAltName=DNS:allowed.test,DNS:*.wild.test",
            ])
        servers = try ClientProcess(
            ip, ["netns", "exec", inetNS, python, dir + "/servers.py", dir, String(k)], stdout: dir + "/servers.out",
            stderr: dir + "/servers.err")
        guard Harness.eventually(timeout: 30, { FileManager.default.fileExists(atPath: dir + "/ready") }) else {
            throw Failure(
                description:
                    "servers not ready: \((try? String(contentsOfFile: dir + "/servers.err", encoding: .utf8)) ?? "")")
        }
    }

    /// The test's own nftables table: 53 (udp, tcp), 80 and 443 arriving on the client veth
    /// go to the filter's ports (as the topology's rules will), nothing else is touched.
    func redirect(dns: UInt16, http: UInt16, tls: UInt16) throws {
        let rules = """
            table ip \(table) {
              chain prerouting {
                type nat hook prerouting priority dstnat; policy accept;
                iifname "\(clientVeth)" udp dport 53 redirect to :\(dns)
                iifname "\(clientVeth)" tcp dport 53 redirect to :\(dns)
                iifname "\(clientVeth)" tcp dport 80 redirect to :\(http)
                iifname "\(clientVeth)" tcp dport 443 redirect to :\(tls)
              }
            }
            """
        try rules.write(toFile: dir + "/rules.nft", atomically: true, encoding: .utf8)
        try must(nft, ["-f", dir + "/rules.nft"])
    }

    /// Requests the decoy server (198.18.K.20) logged.
    var decoyLog: String { (try? String(contentsOfFile: dir + "/decoy.log", encoding: .utf8)) ?? "" }

    func close() {
        for p in background { p.stop(grace: 1) }
        servers?.stop(grace: 2)
        _ = try? Harness.run(nft, ["delete", "table", "ip", table])
        _ = try? Harness.run(ip, ["link", "del", inetVeth])
        _ = try? Harness.run(ip, ["link", "del", clientVeth])
        _ = try? Harness.run(ip, ["netns", "del", inetNS])
        _ = try? Harness.run(ip, ["netns", "del", clientNS])
        Harness.cleanup(netnsEtc, dir)
        // /etc/netns itself when this test made it, and only while empty (rmdir(2)).
        if madeEtcNetns { rmdir("/etc/netns") }
    }

    /// What the test leaves behind if close() failed: namespaces, links, the table.
    func leftovers() -> [String] {
        var found: [String] = []
        let netns = (try? Harness.run(ip, ["netns", "list"]).stdout) ?? ""
        for ns in [inetNS, clientNS] where netns.contains(ns) { found.append("netns \(ns)") }
        let links = (try? Harness.run(ip, ["-o", "link"]).stdout) ?? ""
        for l in [inetVeth, clientVeth] where links.contains(l + "@") || links.contains(l + ":") {
            found.append("link \(l)")
        }
        let tables = (try? Harness.run(nft, ["list", "tables"]).stdout) ?? ""
        if tables.contains(table) { found.append("table \(table)") }
        if FileManager.default.fileExists(atPath: netnsEtc) { found.append(netnsEtc) }
        return found
    }

    static let serversPy = #"""
        import socket, socketserver, ssl, struct, sys, threading, http.server, os
        workdir, k = sys.argv[1], sys.argv[2]
        net = "198.18.%s." % k
        A = {
            "allowed.test": [net + "10"], "www.wild.test": [net + "10"], "decoy.test": [net + "20"],
            "denied.test": [net + "20"], "rebind-lo.test": ["127.0.0.1"], "rebind-private.test": ["10.0.0.1"],
            "metadata.test": ["169.254.169.254"], "mixed.test": ["10.0.0.1", net + "10"],
            "big.test": [net + str(100 + i) for i in range(40)],  # 40 A records: over 512 bytes
        }
        CNAME = {"alias.test": "allowed.test"}
        lock = threading.Lock()
        def log(name, line):
            with lock:
                with open(os.path.join(workdir, name), "a") as f:
                    f.write(line + "\n")

        def answer(q):
            ident, flags, qd = struct.unpack("!HHH", q[:6])
            i, labels = 12, []
            while q[i]:
                labels.append(q[i + 1:i + 1 + q[i]].decode().lower()); i += 1 + q[i]
            qtype, qclass = struct.unpack("!HH", q[i + 1:i + 5])
            question = q[12:i + 5]
            name = ".".join(labels)
            log("dns.log", "%s %d" % (name, qtype))
            rrs = []
            owner = 12
            if name in CNAME:
                target = b"".join(bytes([len(l)]) + l.encode() for l in CNAME[name].split(".")) + b"\0"
                rrs.append(struct.pack("!HHHIH", 0xC000 | owner, 5, 1, 60, len(target)) + target)
                name = CNAME[name]
                owner = 12 + len(question) + 12
            if name not in A:
                return struct.pack("!HHHHHH", ident, 0x8183, 1, len(rrs), 0, 0) + question + b"".join(rrs)
            if qtype == 1:
                for a in A[name]:
                    rrs.append(struct.pack("!HHHIH", 0xC000 | owner, 1, 1, 60, 4) + socket.inet_aton(a))
            return struct.pack("!HHHHHH", ident, 0x8180, 1, len(rrs), 0, 0) + question + b"".join(rrs)

        def dns_udp(s):
            while True:
                q, peer = s.recvfrom(4096)
                try:
                    r = answer(q)
                    if len(r) > 512:  # RFC 1035 4.2.1: truncated, TC set; the client asks over TCP
                        r = struct.pack("!HHHHHH", struct.unpack("!H", r[:2])[0], 0x8380, 1, 0, 0, 0) + q[12:]
                    s.sendto(r, peer)
                except Exception as e:
                    log("dns.log", "error %r" % e)

        def dns_tcp(s):
            while True:
                c, _ = s.accept()
                try:
                    n = struct.unpack("!H", c.recv(2))[0]
                    q = b""
                    while len(q) < n:
                        q += c.recv(n - len(q))
                    log("dns.log", "tcp")
                    r = answer(q)
                    c.sendall(struct.pack("!H", len(r)) + r)
                except Exception as e:
                    log("dns.log", "error %r" % e)
                finally:
                    c.close()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def do_GET(self):
                server_ip = self.connection.getsockname()[0]
                log("decoy.log" if server_ip.endswith(".20") else "served.log",
                    "%s %s %s" % (server_ip, self.headers.get("Host"), self.path))
                if self.path.startswith("/bytes/"):
                    n = int(self.path.split("/")[2])
                    self.send_response(200)
                    self.send_header("Content-Length", str(n))
                    self.end_headers()
                    chunk = b"x" * 65536
                    while n > 0:
                        self.wfile.write(chunk[:min(n, 65536)]); n -= 65536
                    return
                body = ("hello from %s host=%s\n" % (server_ip, self.headers.get("Host"))).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *a):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            def server_bind(self):
                # Not HTTPServer's: its socket.getfqdn() asks the host's resolver, unreachable here.
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = self.server_address[:2]

        def bound(ip, port, tls):
            srv = Server((ip, port), Handler)
            if tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem"))
                srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
            return srv

        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((net + "53", 53))
        # Every socket is bound (listening) before "ready" is written.
        servers = [bound(ip, port, tls) for ip, port, tls in [(net + "10", 80, False), (net + "10", 443, True),
                   (net + "20", 80, False), (net + "20", 443, True), (net + "30", 80, False)]]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((net + "53", 53))
        tcp.listen(16)
        threads = [threading.Thread(target=dns_udp, args=(udp,), daemon=True),
                   threading.Thread(target=dns_tcp, args=(tcp,), daemon=True)]
        threads += [threading.Thread(target=srv.serve_forever, daemon=True) for srv in servers]
        for t in threads:
            t.start()
        import time
        open(os.path.join(workdir, "ready"), "w").close()
        while True:
            time.sleep(3600)
        """#

    static let clientPy = #"""
        import random, select, socket, ssl, struct, sys, time

        def query(name, qtype, ident=None):
            ident = random.randrange(65536) if ident is None else ident
            q = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
            for l in name.split("."):
                q += bytes([len(l)]) + l.encode()
            return q + b"\0" + struct.pack("!HH", qtype, 1)

        def parse(r):
            ident, flags, qd, an = struct.unpack("!HHHH", r[:8])
            i = 12
            for _ in range(qd):
                while r[i] and r[i] < 0xC0: i += 1 + r[i]
                i += (2 if r[i] >= 0xC0 else 1) + 4
            addrs = []
            for _ in range(an):
                while r[i] and r[i] < 0xC0: i += 1 + r[i]
                i += 2 if r[i] >= 0xC0 else 1
                t, c, ttl, n = struct.unpack("!HHIH", r[i:i + 10]); i += 10
                if t == 1: addrs.append(socket.inet_ntoa(r[i:i + 4]))
                i += n
            return flags & 0xF, addrs, (flags >> 9) & 1

        def sock(source, kind=socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, kind)
            s.bind((source, 0))
            return s

        cmd = sys.argv[1]
        if cmd == "dns":  # dns SERVER NAME TYPE SOURCE [tcp]
            server, name, qtype, source = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
            if len(sys.argv) > 6:
                s = sock(source); s.settimeout(10); s.connect((server, 53))
                q = query(name, qtype); s.sendall(struct.pack("!H", len(q)) + q)
                n = struct.unpack("!H", s.recv(2))[0]; r = b""
                while len(r) < n:
                    c = s.recv(n - len(r))
                    if not c: break
                    r += c
            else:
                s = sock(source, socket.SOCK_DGRAM); s.settimeout(10)
                s.sendto(query(name, qtype), (server, 53))
                try:
                    r, _ = s.recvfrom(4096)
                except socket.timeout:
                    print("timeout"); sys.exit(0)
            rcode, addrs, tc = parse(r)
            print("rcode=%d answers=%s tc=%d" % (rcode, ",".join(addrs), tc))
        elif cmd == "burst":  # burst SERVER NAME SOURCE N
            server, name, source, n = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
            s = sock(source, socket.SOCK_DGRAM)
            for i in range(n):
                s.sendto(query(name, 1, i), (server, 53))
            counts = {}
            s.settimeout(5)
            got = 0
            while got < n:
                try:
                    r, _ = s.recvfrom(4096)
                except socket.timeout:
                    break
                got += 1
                rc = parse(r)[0]
                counts[rc] = counts.get(rc, 0) + 1
            print(" ".join("%d:%d" % kv for kv in sorted(counts.items())))
        elif cmd == "http":  # http HOST PORT SOURCE HOSTHEADER
            host, port, source, header = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
            s = sock(source); s.settimeout(15); s.connect((host, port))
            s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % header).encode())
            if len(sys.argv) > 6 and sys.argv[6] == "shut":
                s.shutdown(socket.SHUT_WR)  # half-close: the response must still arrive
            data = b""
            try:
                while True:
                    c = s.recv(65536)
                    if not c: break
                    data += c
            except ConnectionResetError:
                pass
            print(data.decode(errors="replace") if data else "closed")
        elif cmd == "keepalive":  # keepalive HOST PORT SOURCE HOST1 HOST2: two requests, one connection
            s = sock(sys.argv[4]); s.settimeout(15); s.connect((sys.argv[2], int(sys.argv[3])))
            s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % sys.argv[5]).encode())
            first = b""
            while b"\r\n\r\n" not in first:
                first += s.recv(65536)
            head, body = first.split(b"\r\n\r\n", 1)
            length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
            while len(body) < length:
                body += s.recv(65536)
            print("first:", head.decode(errors="replace").replace("\r\n", " "))
            s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % sys.argv[6]).encode())
            data = b""
            try:
                while True:
                    c = s.recv(65536)
                    if not c: break
                    data += c
            except ConnectionResetError:
                pass
            print("second:", data.decode(errors="replace").replace("\r\n", " ") if data else "closed")
        elif cmd == "silent":  # silent HOST PORT SOURCE: connect, send nothing, wait for the close
            s = sock(sys.argv[4]); s.settimeout(60); s.connect((sys.argv[2], int(sys.argv[3])))
            try:
                print("closed" if s.recv(1) == b"" else "data")
            except ConnectionResetError:
                print("closed")
        elif cmd == "hold":  # hold HOST PORT SOURCE HOSTHEADER N: N keep-alive connections until killed
            conns = []
            for _ in range(int(sys.argv[6])):
                s = sock(sys.argv[4]); s.settimeout(15); s.connect((sys.argv[2], int(sys.argv[3])))
                s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % sys.argv[5]).encode())
                s.recv(65536)
                conns.append(s)
            print("held", flush=True)
            time.sleep(600)
        elif cmd == "split":  # split HOST PORT SOURCE SNI PIECE: ClientHello in PIECE-byte segments
            host, port, source, sni, piece = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = ctx.wrap_bio(inc, out, server_hostname=sni)
            s = sock(source); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); s.settimeout(15)
            s.connect((host, port))
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            hello = out.read()
            sizes = [3] + [piece] * len(hello)
            i = 0
            for n in sizes:
                if i >= len(hello): break
                s.sendall(hello[i:i + n]); i += n
                time.sleep(0.05)
            print("segments", sum(1 for _ in range(0, len(hello) - 3, piece)) + 1, file=sys.stderr)
            def pump():
                data = out.read()
                if data: s.sendall(data)
                c = s.recv(65536)
                if not c: raise EOFError
                inc.write(c)
            try:
                while True:
                    try:
                        obj.do_handshake(); break
                    except ssl.SSLWantReadError:
                        pump()
                obj.write(("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % sni).encode())
                s.sendall(out.read())
                resp = b""
                while True:
                    try:
                        resp += obj.read(65536)
                    except ssl.SSLWantReadError:
                        c = s.recv(65536)
                        if not c: break
                        inc.write(c)
                    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                        break
                print(resp.decode(errors="replace"))
            except (EOFError, ConnectionResetError):
                print("closed")
        """#
}

/// The decision records a test collects.
final class RecordLog: Sendable {
    let records = Mutex<[EgressRecord]>([])
    func append(_ r: EgressRecord) { records.withLock { $0.append(r) } }
    var all: [EgressRecord] { records.withLock { $0 } }
    func first(_ predicate: (EgressRecord) -> Bool) -> EgressRecord? { all.first(where: predicate) }
    /// Waits (bounded) for a record: connection records come when the connection closes.
    func wait(_ predicate: (EgressRecord) -> Bool) -> EgressRecord? {
        _ = Harness.eventually(timeout: 20) { first(predicate) != nil }
        return first(predicate)
    }
}
