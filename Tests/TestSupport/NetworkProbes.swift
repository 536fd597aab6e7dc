import Foundation
import Glibc

/// What the tests run around a sandbox network: a stand-in for the egress filter on the host
/// (python3 listeners that answer with their name and log every peer), and clients run inside
/// the sandbox's network namespace (nsenter --net).
package enum NetworkProbes {
    /// Listeners on 0.0.0.0 (ports chosen by the kernel): TCP `dns`, `http`, `tls`, UDP `dns`,
    /// and `extra` TCP on 0.0.0.0 and `loopback` TCP on 127.0.0.1. Each answers its name to
    /// whatever it receives and appends `name peer` to `<dir>/hits`. Ports go to `<dir>/ports`.
    package static let listenerScript = #"""
        import json, os, selectors, socket, sys
        d = sys.argv[1]
        sel = selectors.DefaultSelector()
        ports = {}
        def tcp(name, addr="0.0.0.0"):
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, 0)); s.listen(64); ports[name] = s.getsockname()[1]
            sel.register(s, selectors.EVENT_READ, ("accept", name))
        for n in ["dns", "http", "tls", "extra"]: tcp(n)
        tcp("loopback", "127.0.0.1")
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", ports["dns"]))
        sel.register(u, selectors.EVENT_READ, ("udp", "dns-udp"))
        with open(d + "/ports.tmp", "w") as f: json.dump(ports, f)
        os.rename(d + "/ports.tmp", d + "/ports")
        def hit(name, peer):
            with open(d + "/hits", "a") as f: f.write("%s %s\n" % (name, peer))
        while True:
            for key, _ in sel.select():
                kind, name = key.data
                if kind == "accept":
                    c, peer = key.fileobj.accept(); hit(name, peer[0])
                    sel.register(c, selectors.EVENT_READ, ("read", name))
                elif kind == "read":
                    try: data = key.fileobj.recv(4096)
                    except OSError: data = b""
                    if data: key.fileobj.sendall(name.encode())
                    else: sel.unregister(key.fileobj); key.fileobj.close()
                else:
                    data, peer = key.fileobj.recvfrom(4096); hit(name, peer[0]); key.fileobj.sendto(b"dns", peer)
        """#

    /// One attempt: `tcp|udp host port [source[,port]]` (host IPv4, or IPv6 with `%scope`): prints `reply:<text>`, `timeout`, `refused`
    /// or `error:<errno name>`. The 2 s bound tells a dropped packet (no answer) from a refused
    /// one; it is not a timing assertion.
    package static let clientScript = #"""
        import errno, socket, sys
        proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        family, _, _, _, address = socket.getaddrinfo(host, port, 0, kind)[0]
        s = socket.socket(family, kind)
        s.settimeout(2)
        if len(sys.argv) > 4:
            source = sys.argv[4].split(",")
            s.bind((source[0], int(source[1]) if len(source) > 1 else 0))
        try:
            if proto == "tcp": s.connect(address); s.sendall(b"hello")
            else: s.sendto(b"hello", address)
            print("reply:" + s.recv(100).decode())
        except socket.timeout: print("timeout")
        except ConnectionRefusedError: print("refused")
        except OSError as e: print("error:" + errno.errorcode.get(e.errno, str(e.errno)))
        """#

    package final class Listener {
        package let process: Process
        package let dir: String
        package let ports: [String: UInt16]

        package init() throws {
            dir = try Harness.tempDir("net-listener")
            process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            process.arguments = ["-c", NetworkProbes.listenerScript, dir]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let file = dir + "/ports"
            guard Harness.eventually(timeout: 20, { FileManager.default.fileExists(atPath: file) }),
                let data = FileManager.default.contents(atPath: file),
                let json = try JSONSerialization.jsonObject(with: data) as? [String: Int]
            else {
                process.terminate()
                throw ProbeError("the listener did not start")
            }
            ports = json.mapValues { UInt16($0) }
        }

        /// `name peer` lines so far.
        package var hits: [String] { lines((try? String(contentsOfFile: dir + "/hits", encoding: .utf8)) ?? "") }

        package func stop() {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            Harness.cleanup(dir)
        }
    }

    /// Runs the client in network namespace file `namespace` (nil: the host's).
    package static func attempt(
        in namespace: String?, _ proto: String, _ host: String, _ port: UInt16, source: String? = nil
    )
        throws -> String
    {
        var args = ["-c", clientScript, proto, host, String(port)]
        if let source { args.append(source) }
        let result =
            if let namespace {
                try Harness.run("/usr/bin/nsenter", ["--net=\(namespace)", "/usr/bin/python3"] + args, timeout: 30)
            } else {
                try Harness.run("/usr/bin/python3", args, timeout: 30)
            }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            + (result.status == 0 ? "" : " [status \(result.status): \(result.stderr)]")
    }

    /// `ip ARGS` (iproute2, the tests' independent view of the kernel), in `namespace` if given.
    package static func ip(_ args: [String], in namespace: String? = nil) throws -> String {
        let result =
            if let namespace {
                try Harness.run("/usr/bin/nsenter", ["--net=\(namespace)", "/usr/sbin/ip"] + args, timeout: 30)
            } else {
                try Harness.run("/usr/sbin/ip", args, timeout: 30)
            }
        return result.stdout
    }

    /// `nft list tables` lines (nftables' CLI, apart from the library under test).
    package static func tables() throws -> [String] {
        lines(try Harness.run("/usr/sbin/nft", ["list", "tables"], timeout: 30).stdout)
    }

    package struct ProbeError: Error, CustomStringConvertible {
        package var description: String
        package init(_ description: String) { self.description = description }
    }
}
