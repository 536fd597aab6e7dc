import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// Issue 16 item 4: the formats of `list`, `events`, `--debug`, `exec -p` and `exec --pid-file`,
/// each run through runc and safespace-runtime on the same bundle and compared.
@Suite(.enabled(if: RuncDifferential.available, "needs root and runc"))
struct RuncParityFormatsTests {
    /// A running `sleep` container in both runtimes.
    static func sleeping(_ prefix: String, edit: (inout Spec) -> Void = { _ in }) throws -> RuncDifferential {
        let d = try RuncDifferential(prefix, bundle: try Harness.busyboxBundle(["sleep", "600"], edit: edit))
        try d.startBoth()
        return d
    }

    /// Cells of a table laid out with runs of spaces, and the rule runc's tabwriter follows:
    /// every cell but the last padded to its column's widest cell + 3, at least 12.
    static func tabwriterRule(_ text: String) -> (rows: [[String]], relaid: String) {
        let rows = text.split(separator: "\n").map {
            $0.split(separator: "   ", omittingEmptySubsequences: true).map { $0.trimmingCharacters(in: .whitespaces) }
        }
        var widths = [Int](repeating: 12, count: (rows.map(\.count).max() ?? 1) - 1)
        for row in rows { for (i, cell) in row.dropLast().enumerated() { widths[i] = max(widths[i], cell.count + 3) } }
        let relaid =
            rows.map { row in
                row.enumerated().map { i, cell in
                    i < row.count - 1 ? cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) : cell
                }.joined()
            }.joined(separator: "\n") + "\n"
        return (rows, relaid)
    }

    @Test(
        "list: runc's columns laid out by runc's tabwriter rule; -q the ids; --format json with runc's members in runc's order"
    )
    func list() throws {
        let d = try Self.sleeping("list")
        defer { d.destroy() }
        let (r, o) = try d.both(["list"])
        try #require(r.status == 0 && o.status == 0, "\(r.stderr) \(o.stderr)")
        let runcTable = Self.tabwriterRule(r.stdout)
        let ourTable = Self.tabwriterRule(o.stdout)
        #expect(runcTable.relaid == r.stdout, "the rule does not describe runc's table:\n\(r.stdout)")
        #expect(ourTable.relaid == o.stdout, "ours:\n\(o.stdout)")
        #expect(
            ourTable.rows.first == runcTable.rows.first
                && ourTable.rows.first == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"])
        let ourRow = try #require(ourTable.rows.last)
        let runcRow = try #require(runcTable.rows.last)
        #expect(
            ourRow[0] == d.id && ourRow[2] == "running" && ourRow[3] == d.bundle && ourRow[5] == runcRow[5],
            "\(ourRow) vs \(runcRow)")
        // Go's RFC3339Nano in both (no trailing zeros in the fraction).
        for created in [ourRow[4], runcRow[4]] {
            #expect(created.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z/) != nil, "\(created)")
        }

        let quiet = try d.both(["list", "-q"])
        #expect(quiet.ours.stdout == "\(d.id)\n" && quiet.runc.stdout == quiet.ours.stdout)
        let json = try d.both(["list", "--format", "json"])
        func keys(_ text: String) -> [String] { text.matches(of: /"([a-zA-Z]+)":/).map { String($0.1) } }
        #expect(
            keys(json.ours.stdout) == keys(json.runc.stdout), "runc: \(json.runc.stdout)\nours: \(json.ours.stdout)")
        let bad = try d.both(["list", "--format", "xml"])
        #expect(
            bad.ours.status == bad.runc.status
                && RuncDifferential.errorMessage(bad.ours.stderr) == RuncDifferential.errorMessage(bad.runc.stderr))
    }

    /// Every member name of a JSON value, as dotted paths (array elements under `[]`).
    static func paths(_ value: Any, _ prefix: String = "") -> Set<String> {
        if let object = value as? [String: Any] {
            return object.reduce(into: Set<String>()) { set, member in
                let path = prefix.isEmpty ? member.key : prefix + "." + member.key
                set.insert(path)
                set.formUnion(paths(member.value, path))
            }
        }
        if let array = value as? [Any] {
            return array.reduce(into: Set<String>()) { $0.formUnion(paths($1, prefix + "[]")) }
        }
        return []
    }

    /// Whether the member at a dotted path of a decoded JSON object is a non-zero number or a non-empty array.
    static func isNonZero(_ object: [String: Any], at path: String) -> Bool {
        var value: Any = object
        for key in path.split(separator: ".") {
            guard let next = (value as? [String: Any])?[String(key)] else { return false }
            value = next
        }
        if let number = value as? NSNumber { return number.doubleValue != 0 }
        if let array = value as? [Any] { return !array.isEmpty }
        return false
    }

    @Test(
        "events --stats: one runc-shaped line, {\"type\":\"stats\",\"id\":…,\"data\":{…}}, with every member runc always writes"
    )
    func stats() throws {
        let d = try Self.sleeping("stats")
        defer { d.destroy() }
        let (r, o) = try d.both(["events", "--stats", "ID"])
        try #require(r.status == 0 && o.status == 0, "\(r.stderr) \(o.stderr)")
        let prefix = "{\"type\":\"stats\",\"id\":\"\(d.id)\",\"data\":{\"cpu\":{\"usage\":{"
        #expect(
            o.stdout.hasPrefix(prefix) && r.stdout.hasPrefix(prefix),
            "runc: \(r.stdout.prefix(80)) ours: \(o.stdout.prefix(80))")
        #expect(o.stdout.split(separator: "\n").count == 1 && o.stdout.hasSuffix("}\n"))
        let runcData = try #require(
            (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])?["data"] as? [String: Any])
        let ourData = try #require(
            (try JSONSerialization.jsonObject(with: Data(o.stdout.utf8)) as? [String: Any])?["data"] as? [String: Any])
        // Members without omitempty in runc's types/events.go: in both, whatever the values.
        let always: Set<String> = [
            "cpu", "cpu.usage", "cpu.usage.kernel", "cpu.usage.user", "cpu.throttling", "cpuset",
            "cpuset.cpu_exclusive",
            "cpuset.mem_hardwall", "cpuset.mem_exclusive", "cpuset.memory_migrate", "cpuset.memory_spread_page",
            "cpuset.memory_spread_slab", "cpuset.memory_pressure", "cpuset.sched_load_balance",
            "cpuset.sched_relax_domain_level",
            "memory", "memory.usage", "memory.usage.limit", "memory.usage.failcnt", "memory.swap", "memory.swap.limit",
            "memory.swap.failcnt", "memory.kernel", "memory.kernel.limit", "memory.kernel.failcnt", "memory.kernelTCP",
            "memory.kernelTCP.limit", "memory.kernelTCP.failcnt", "pids", "blkio", "hugetlb", "intel_rdt",
            "network_interfaces",
        ]
        let runcPaths = Self.paths(runcData)
        let ourPaths = Self.paths(ourData)
        #expect(always.subtracting(runcPaths).isEmpty, "runc lacks \(always.subtracting(runcPaths))")
        #expect(always.subtracting(ourPaths).isEmpty, "ours lacks \(always.subtracting(ourPaths))")
        // Nothing runc would not write (but runc 1.2's memory.event_count); memory.raw's keys are the kernel's.
        // Members runc writes with omitempty: present only when non-zero, so two containers may differ
        // (runc's with no page cache yet, ours with some). Ours may have one runc lacks only if its value
        // is non-zero (a zero one must be left out, as runc does).
        let omitEmpty: Set<String> = [
            "memory.cache", "cpu.usage.percpu", "cpu.usage.percpu_kernel", "cpu.usage.percpu_user",
            "cpu.throttling.periods", "cpu.throttling.throttled_periods", "cpu.throttling.throttled_time",
            "pids.current", "pids.limit",
        ]
        let extra = ourPaths.subtracting(runcPaths).filter {
            !$0.hasPrefix("memory.event_count") && !$0.hasPrefix("memory.raw.") && !$0.hasPrefix("blkio.")
                && !$0.hasPrefix("hugetlb.") && !(omitEmpty.contains($0) && Self.isNonZero(ourData, at: $0))
        }
        #expect(extra.isEmpty, "members runc does not write: \(extra.sorted())")
        #expect(ourData["network_interfaces"] is NSNull && runcData["network_interfaces"] is NSNull)
    }

    @Test("events: an OOM kill in a 32 MiB container is reported as {\"type\":\"oom\",\"id\":…}, as runc reports it")
    func oom() throws {
        let hog = "sleep 1; x=0123456789abcdef; while true; do x=$x$x; done"
        let d = try RuncDifferential(
            "oom",
            bundle: try Harness.busyboxBundle(["sh", "-c", hog]) { spec in
                spec.linux?.resources?.memory = .init(limit: 32 << 20, swap: 32 << 20)
            })
        defer { d.destroy() }
        let created = try d.both(["create", "--bundle", d.bundle, "ID"])
        try #require(created.runc.status == 0 && created.ours.status == 0, "\(created)")
        // events until the OOM line appears (runc's goes on after the container stops).
        let runcEvents = try Harness.Background(
            RuncDifferential.runcBinary!, ["--root", d.runcRoot, "events", "--interval", "1s", d.id])
        let ourEvents = try Harness.Background(
            Harness.runtimeBinary, ["--root", d.ourRoot, "events", "--interval", "1s", d.id])
        defer {
            runcEvents.terminate()
            ourEvents.terminate()
        }
        let started = try d.both(["start", "ID"])
        try #require(started.runc.status == 0 && started.ours.status == 0)
        let oomLine = "{\"type\":\"oom\",\"id\":\"\(d.id)\"}"
        // Ours ends once the container has stopped; runc's is stopped here after a while.
        _ = Harness.eventually(timeout: 60) { !ourEvents.process.isRunning }
        let ours = ourEvents.wait()
        #expect(
            ours.stdout.split(separator: "\n").contains(Substring(oomLine)),
            "ours: \(ours.stdout.suffix(300)) \(ours.stderr)")
        // runc's events writes the line when the kernel signals the OOM, before the container stops.
        #expect(
            Harness.eventually(timeout: 60) { (try? d.runc(["state", "ID"]).stdout.contains("\"stopped\"")) == true })
        runcEvents.terminate()
        let runcOut = runcEvents.wait()
        #expect(
            runcOut.stdout.split(separator: "\n").contains(Substring(oomLine)), "runc: \(runcOut.stdout.suffix(300))")
    }

    @Test(
        "--debug writes level=debug lines (text and JSON, logrus's layout) to --log; none without --debug",
        arguments: ["text", "json"])
    func debugLog(format: String) throws {
        let d = try Self.sleeping("debug")
        defer { d.destroy() }
        let runcLog = d.runcRoot + "/debug.log"
        let ourLog = d.ourRoot + "/debug.log"
        let r = try d.runc(["--debug", "--log", runcLog, "--log-format", format, "exec", "ID", "true"])
        let o = try d.ours(["--debug", "--log", ourLog, "--log-format", format, "exec", "ID", "true"])
        #expect(r.status == 0 && o.status == 0, "\(r.stderr) \(o.stderr)")
        let runcLines = lines(try String(contentsOfFile: runcLog, encoding: .utf8))
        let ourLines = lines(try String(contentsOfFile: ourLog, encoding: .utf8))
        for (who, all) in [("runc", runcLines), ("ours", ourLines)] {
            let debug = all.filter {
                format == "text" ? $0.contains(" level=debug ") : $0.contains("\"level\":\"debug\"")
            }
            #expect(!debug.isEmpty, "\(who): no debug line in \(all)")
            for line in debug {
                if format == "text" {
                    #expect(
                        line.wholeMatch(
                            of:
                                /time="[0-9T:\-]+Z" level=debug msg=("([^"\\]|\\.)*"|\S+)( [a-z_]+=("([^"\\]|\\.)*"|\S+))*/
                        ) != nil, "\(who): \(line)")
                } else {
                    let object = try #require(
                        try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(who): \(line)")
                    #expect(object["msg"] is String && object["time"] is String, "\(who): \(line)")
                }
            }
        }
        // The same record with the final exit: runc's "process exited" line.
        #expect(
            ourLines.contains { $0.contains("process exited") } && runcLines.contains { $0.contains("process exited") })
        // JSON keys sorted as logrus writes them: level, msg, …, time.
        if format == "json", let first = ourLines.first {
            let keys = first.matches(of: /"([a-z_]+)":/).map { String($0.1) }
            #expect(keys == keys.sorted(), "\(first)")
        }
        let quietLog = d.ourRoot + "/quiet.log"
        #expect(try d.ours(["--log", quietLog, "--log-format", format, "exec", "ID", "true"]).status == 0)
        #expect((try? String(contentsOfFile: quietLog, encoding: .utf8)) ?? "" == "")
    }

    @Test("exec -p FILE with a process without `user` runs as uid 0, gid 0, as runc does")
    func processWithoutUser() throws {
        let d = try Self.sleeping("execp")
        defer { d.destroy() }
        let file = d.ourRoot + "/process.json"
        try #"{"args": ["sh", "-c", "id -u; id -g"], "cwd": "/", "env": ["PATH=/bin"]}"#.write(
            toFile: file, atomically: true, encoding: .utf8)
        let (r, o) = try d.both(["exec", "-p", file, "ID"])
        #expect(r.status == 0 && o.status == 0, "runc: \(r.stderr) ours: \(o.stderr)")
        #expect(o.stdout == "0\n0\n" && r.stdout == o.stdout)
    }

    @Test("exec --pid-file into a missing directory: status 255 and runc's message, and the process does not stay")
    func pidFileMissingDirectory() throws {
        let d = try Self.sleeping("pidfile")
        defer { d.destroy() }
        let pidFile = d.ourRoot + "/no-such-dir/exec.pid"
        let (r, o) = try d.both(["exec", "--pid-file", pidFile, "ID", "sleep", "577"])
        #expect(r.status == 255 && o.status == 255, "runc \(r.status), ours \(o.status): \(o.stderr)")
        let expected = "exec failed: open \(d.ourRoot)/no-such-dir/.exec.pid: no such file or directory"
        #expect(RuncDifferential.errorMessage(o.stderr) == expected, "\(o.stderr)")
        #expect(RuncDifferential.errorMessage(r.stderr) == expected, "\(r.stderr)")
        let ps = try d.ours(["ps", "--format", "json", "ID"])
        let pids = try JSONSerialization.jsonObject(with: Data(ps.stdout.utf8)) as? [Any]
        #expect(pids?.count == 1, "only the init should be left: \(ps.stdout)")
    }
}
