import Foundation
import Glibc

/// A simulated internet for the egress tests of the front ends (`safespace run`, safespaced),
/// in a network namespace of the test's own (root), reached from the host (where the egress
/// filter runs) over a veth:
///
///     host  veth ssnI<pid> 198.18.K.1/24          (K = 220 + pid % 30: apart from the
///        |                                          EgressFilterTests' 198.18.20-219)
///     inet netns  eth0 198.18.K.53  DNS (UDP+TCP): pypi.org -> .10, files.pythonhosted.org
///                                   -> .11, denied.test -> .20; NXDOMAIN otherwise
///                      198.18.K.10  "pypi.org": HTTPS+HTTP, a simple index (PEP 503) of one
///                                   wheel, tinypkg 1.0; /slow/N sends 1 byte a second for N s
///                      198.18.K.11  "files.pythonhosted.org": HTTPS+HTTP, the wheel
///                      198.18.K.20  "denied.test": logs every connection on 80, 443, 8443
///
/// One self-signed certificate names pypi.org and files.pythonhosted.org (`certificatePEM`,
/// the trust anchor a client in the sandbox gets, e.g. pip's `--cert`). The wheel is made
/// by the servers at start. `close()` removes the namespace, veth, processes and files.
package final class TestInternet: @unchecked Sendable {
    package let k: Int
    package let namespace: String
    package let veth: String
    package let dir: String
    private var servers: ClientProcess?
    private let ip = Harness.find("ip") ?? "/usr/sbin/ip"

    package var dnsServer: String { "198.18.\(k).53" }
    package var pypiAddress: String { "198.18.\(k).10" }
    package var filesAddress: String { "198.18.\(k).11" }
    package var deniedAddress: String { "198.18.\(k).20" }
    /// `SAFESPACE_UPSTREAM_DNS` / `network.upstreamDNS` for the filter.
    package var upstreamDNS: String { "\(dnsServer):53" }
    /// The range the filter must be allowed to dial (`network.allowedPrivateRanges`).
    package static let range = "198.18.0.0/15"
    package var certificatePEM: String {
        (try? String(contentsOfFile: dir + "/cert.pem", encoding: .utf8)) ?? ""
    }

    package init() throws {
        let pid = getpid()
        k = 220 + Int(pid % 30)
        namespace = "ssnet-inet-\(pid)"
        veth = "ssnI\(pid % 100000)"
        dir = try Harness.tempDir("internet")
    }

    @discardableResult
    private func must(_ path: String, _ args: [String]) throws -> Harness.Result {
        let result = try Harness.run(path, args, timeout: 60)
        guard result.status == 0 else {
            throw ClientError("\(path) \(args.joined(separator: " ")): status \(result.status): \(result.stderr)")
        }
        return result
    }

    /// Makes the namespace, veth and servers; waits until every server listens.
    package func up() throws {
        try must(ip, ["netns", "add", namespace])
        try must(ip, ["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace])
        try must(ip, ["addr", "add", "198.18.\(k).1/24", "dev", veth])
        try must(ip, ["link", "set", veth, "up"])
        for a in [dnsServer, pypiAddress, filesAddress, deniedAddress] {
            try must(ip, ["-n", namespace, "addr", "add", "\(a)/24", "dev", "eth0"])
        }
        try must(ip, ["-n", namespace, "link", "set", "lo", "up"])
        try must(ip, ["-n", namespace, "link", "set", "eth0", "up"])
        try must(ip, ["-n", namespace, "route", "add", "default", "via", "198.18.\(k).1"])
        try must(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem",
                "-days", "1", "-subj", "/CN=pypi.org", "-addext",
                "subjectAltName=DNS:pypi.org,DNS:files.pythonhosted.org",
            ])
        try Self.serversPy.write(toFile: dir + "/servers.py", atomically: true, encoding: .utf8)
        servers = try ClientProcess(
            ip, ["netns", "exec", namespace, "/usr/bin/python3", dir + "/servers.py", dir, String(k)],
            stdout: dir + "/servers.out", stderr: dir + "/servers.err")
        guard Harness.eventually(timeout: 30, { FileManager.default.fileExists(atPath: dir + "/ready") }) else {
            throw ClientError(
                "servers not ready: \((try? String(contentsOfFile: dir + "/servers.err", encoding: .utf8)) ?? "")")
        }
    }

    /// Requests served by pypi.org and files.pythonhosted.org: "ip host path" lines.
    package var served: String { (try? String(contentsOfFile: dir + "/served.log", encoding: .utf8)) ?? "" }
    /// Connections that reached denied.test: "ip:port" lines (must stay empty).
    package var deniedLog: String { (try? String(contentsOfFile: dir + "/denied.log", encoding: .utf8)) ?? "" }

    package func close() {
        servers?.stop(grace: 2)
        _ = try? Harness.run(ip, ["link", "del", veth])
        _ = try? Harness.run(ip, ["netns", "del", namespace])
        Harness.cleanup(dir)
    }

    /// What `close()` left: the namespace, the veth.
    package func leftovers() -> [String] {
        var found: [String] = []
        if ((try? Harness.run(ip, ["netns", "list"]).stdout) ?? "").contains(namespace) {
            found.append("netns \(namespace)")
        }
        let links = (try? Harness.run(ip, ["-o", "link"]).stdout) ?? ""
        if links.contains(veth + ":") || links.contains(veth + "@") { found.append("link \(veth)") }
        return found
    }

    /// A shell script for the sandbox (python:3.11 rootfs): the certificate from stdin or
    /// `$CA` into /tmp/ca.pem, `pip download` and `pip install --target` of tinypkg from the
    /// index, an import of it; then a lookup of denied.test and connections to its address
    /// (443 with its SNI, 8443). Prints `tinypkg 42`, `lookup <outcome>`, `tls443 <outcome>`,
    /// `tcp8443 <outcome>`.
    package func pipScript(certificateFromStdin: Bool) -> String {
        let save = certificateFromStdin ? "cat > /tmp/ca.pem" : "printf '%s' \"$CA\" > /tmp/ca.pem"
        return """
            set -e
            \(save)
            export PIP_CERT=/tmp/ca.pem HOME=/tmp PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_TIMEOUT=30
            pip download --no-deps -d /tmp/dl tinypkg
            python3 -c 'import os; print(*os.listdir("/tmp/dl"))'
            pip install --no-deps --target /tmp/site tinypkg
            PYTHONPATH=/tmp/site python3 -c 'import tinypkg; print("tinypkg", tinypkg.VALUE)'
            python3 - <<'EOF'
            import socket, ssl
            try:
                socket.getaddrinfo("denied.test", 443)
                print("lookup resolved", flush=True)
            except socket.gaierror as e:
                print("lookup nxdomain" if e.errno == socket.EAI_NONAME else "lookup gaierror%d" % e.errno, flush=True)
            def attempt(label, port, tls):
                s = socket.socket(); s.settimeout(4)
                try:
                    s.connect(("\(deniedAddress)", port))
                    if tls:
                        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
                        s = ctx.wrap_socket(s, server_hostname="denied.test")
                        s.sendall(b"GET / HTTP/1.1\\r\\nHost: denied.test\\r\\n\\r\\n")
                        print(label, "answered" if s.recv(100) else "closed", flush=True)
                    else:
                        print(label, "connected", flush=True)
                except socket.timeout:
                    print(label, "dropped", flush=True)
                except (OSError, ssl.SSLError) as e:
                    print(label, "refused", flush=True)
            attempt("tls443", 443, True)
            attempt("tcp8443", 8443, False)
            EOF
            """
    }

    /// A shell command for the sandbox: GET https://pypi.org/slow/N with /tmp/ca.pem as the
    /// trust anchor, printing `started` once the response began (the connection then stays
    /// open mid-transfer for N seconds).
    package func slowCommand(seconds: Int) -> String {
        """
        python3 -c '
        import ssl, urllib.request
        ctx = ssl.create_default_context(cafile="/tmp/ca.pem")
        r = urllib.request.urlopen("https://pypi.org/slow/\(seconds)", context=ctx, timeout=\(seconds + 30))
        print("started", flush=True)
        print(len(r.read()), flush=True)
        '
        """
    }

    static let serversPy = #"""
        import hashlib, base64, io, os, socket, socketserver, ssl, struct, sys, threading, time, zipfile, http.server
        workdir, k = sys.argv[1], sys.argv[2]
        net = "198.18.%s." % k
        A = {"pypi.org": net + "10", "files.pythonhosted.org": net + "11", "denied.test": net + "20"}
        lock = threading.Lock()
        def log(name, line):
            with lock:
                with open(os.path.join(workdir, name), "a") as f:
                    f.write(line + "\n")

        # The wheel (PEP 427): a module, METADATA, WHEEL and RECORD with each file's digest.
        def wheel():
            files = {
                "tinypkg/__init__.py": b"VALUE = 42\n",
                "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
                "tinypkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: safespace-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            }
            record = ""
            for name, data in files.items():
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                record += "%s,sha256=%s,%d\n" % (name, digest, len(data))
            record += "tinypkg-1.0.dist-info/RECORD,,\n"
            files["tinypkg-1.0.dist-info/RECORD"] = record.encode()
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w") as z:
                for name, data in files.items():
                    z.writestr(name, data)
            return out.getvalue()
        WHEEL = wheel()
        WHEEL_NAME = "tinypkg-1.0-py3-none-any.whl"
        INDEX = ('<!DOCTYPE html><html><body><a href="https://files.pythonhosted.org/packages/%s#sha256=%s">%s</a>'
                 '</body></html>\n' % (WHEEL_NAME, hashlib.sha256(WHEEL).hexdigest(), WHEEL_NAME)).encode()

        def answer(q):
            ident, flags, qd = struct.unpack("!HHH", q[:6])
            i, labels = 12, []
            while q[i]:
                labels.append(q[i + 1:i + 1 + q[i]].decode().lower()); i += 1 + q[i]
            qtype, qclass = struct.unpack("!HH", q[i + 1:i + 5])
            question = q[12:i + 5]
            name = ".".join(labels)
            log("dns.log", "%s %d" % (name, qtype))
            if name not in A:
                return struct.pack("!HHHHHH", ident, 0x8183, 1, 0, 0, 0) + question
            rrs = []
            if qtype == 1:
                rrs.append(struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(A[name]))
            return struct.pack("!HHHHHH", ident, 0x8180, 1, len(rrs), 0, 0) + question + b"".join(rrs)

        def dns_udp(s):
            while True:
                q, peer = s.recvfrom(4096)
                try:
                    s.sendto(answer(q), peer)
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
                    r = answer(q)
                    c.sendall(struct.pack("!H", len(r)) + r)
                except Exception as e:
                    log("dns.log", "error %r" % e)
                finally:
                    c.close()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def send(self, status, body, kind="text/html"):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def do_GET(self):
                server_ip = self.connection.getsockname()[0]
                log("served.log", "%s %s %s" % (server_ip, self.headers.get("Host"), self.path))
                if server_ip.endswith(".10") and self.path.rstrip("/") in ("/simple/tinypkg", "/simple/tinypkg/"):
                    return self.send(200, INDEX)
                if server_ip.endswith(".10") and self.path.startswith("/slow/"):
                    n = int(self.path.split("/")[2])
                    self.send_response(200)
                    self.send_header("Content-Length", str(n))
                    self.end_headers()
                    for _ in range(n):
                        self.wfile.write(b"x"); self.wfile.flush(); time.sleep(1)
                    return
                if server_ip.endswith(".11") and self.path == "/packages/" + WHEEL_NAME:
                    return self.send(200, WHEEL, "application/octet-stream")
                self.send(404, b"not found\n", "text/plain")
            def log_message(self, *a):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            def server_bind(self):
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = self.server_address[:2]

        def bound(ip, port, tls):
            srv = Server((ip, port), Handler)
            if tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem"))
                srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
            return srv

        def denied(port):
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((net + "20", port)); s.listen(16)
            def loop():
                while True:
                    c, peer = s.accept()
                    log("denied.log", "%s:%d" % (peer[0], port))
                    c.close()
            return loop

        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((net + "53", 53))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((net + "53", 53))
        tcp.listen(16)
        servers = [bound(ip, port, tls) for ip, port, tls in [
            (net + "10", 443, True), (net + "10", 80, False), (net + "11", 443, True), (net + "11", 80, False)]]
        loops = [denied(p) for p in (80, 443, 8443)]
        threads = [threading.Thread(target=dns_udp, args=(udp,), daemon=True),
                   threading.Thread(target=dns_tcp, args=(tcp,), daemon=True)]
        threads += [threading.Thread(target=srv.serve_forever, daemon=True) for srv in servers]
        threads += [threading.Thread(target=l, daemon=True) for l in loops]
        for t in threads:
            t.start()
        open(os.path.join(workdir, "ready"), "w").close()
        while True:
            time.sleep(3600)
        """#
}

/// What a sandbox network is made of on the node, looked up by its names with the kernel's
/// tools (iproute2, nft) and the files: each entry found is named. Empty: nothing of it is
/// left.
package enum SandboxNetworkObjects {
    /// - Parameters: `veth` (the host side, `SandboxNetworks.vethName`), `table`
    ///   (`SandboxNetworks.table`), `namespaceFile`, `sandbox` (the name its lease records),
    ///   `leaseStore` (runtime.json's `leases`, default /run/safespace-leases).
    package static func find(
        veth: String, table: String, namespaceFile: String, sandbox: String,
        leaseStore: String = defaultLeaseStore
    ) -> [String] {
        var found: [String] = []
        let links = (try? Harness.run("/usr/sbin/ip", ["-o", "link"], timeout: 30).stdout) ?? ""
        if links.contains(" \(veth):") || links.contains(" \(veth)@") { found.append("veth \(veth)") }
        let routes = (try? Harness.run("/usr/sbin/ip", ["route", "show", "table", "all"], timeout: 30).stdout) ?? ""
        for route in routes.split(separator: "\n")
        where route.contains(" dev \(veth) ") || route.hasSuffix(" dev \(veth)") {
            found.append("route \(route)")
        }
        let tables = (try? Harness.run("/usr/sbin/nft", ["list", "tables"], timeout: 30).stdout) ?? ""
        if tables.split(separator: "\n").contains(where: { $0 == "table inet \(table)" }) {
            found.append("nftables table inet \(table)")
        }
        if FileManager.default.fileExists(atPath: namespaceFile) { found.append("netns file \(namespaceFile)") }
        let leases = leaseStore + "/network"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: leases)) ?? [] where name.hasSuffix(".json") {
            let text = (try? String(contentsOfFile: leases + "/" + name, encoding: .utf8)) ?? ""
            if text.contains("\"\(sandbox)\"") { found.append("lease \(leases)/\(name)") }
        }
        return found
    }

    /// runtime.json's `leases` (/etc/safespace/runtime.json), else /run/safespace-leases.
    package static var defaultLeaseStore: String {
        if let data = FileManager.default.contents(atPath: "/etc/safespace/runtime.json"),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let dir = object["leases"] as? String
        {
            return dir
        }
        return "/run/safespace-leases"
    }
}
