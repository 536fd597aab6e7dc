import Foundation
import Glibc
import Testing

@testable import Audit

/// A directory under /tmp for one test, removed by `remove()`.
struct TempDir {
    let path: String

    init(_ name: String = "audit") throws {
        path = FileManager.default.temporaryDirectory.path + "/safespace-\(name)-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// The file's lines (without their newlines), as bytes.
func lines(of path: String) throws -> [[UInt8]] {
    let data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    var out = data.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
    if out.last?.isEmpty == true { out.removeLast() }
    return out
}

func write(lines: [[UInt8]], to path: String, finalNewline: Bool = true) throws {
    var bytes = Array(lines.joined(separator: [0x0A]))
    if finalNewline { bytes.append(0x0A) }
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func json(_ line: [UInt8]) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
}

/// SHA-256 by coreutils' sha256sum, a second implementation to check the chain against.
func sha256sum(_ bytes: [UInt8]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
    let input = Pipe()
    let output = Pipe()
    p.standardInput = input
    p.standardOutput = output
    try p.run()
    input.fileHandleForWriting.write(Data(bytes))
    try input.fileHandleForWriting.close()
    let out = output.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(String(decoding: out, as: UTF8.self).prefix(64))
}

/// A few records of each kind the daemon writes.
func sampleRecords(sandbox: String = "sb-1") -> [AuditRecord] {
    [
        AuditRecord(
            type: "sandbox.created", sandbox: sandbox, callerUID: 1000, callerPID: 4242,
            fields: ["level": .string("standard")]),
        AuditRecord(
            type: "exec.started", sandbox: sandbox, callerUID: 1000, callerPID: 4242,
            fields: [
                "argv": .strings(["python3", "-c", "print(\"hi\")\n"]),
                "stdinSHA256": .string(String(repeating: "ab", count: 32)),
            ]),
        AuditRecord(
            type: "exec.finished", sandbox: sandbox, callerUID: 1000, callerPID: 4242,
            fields: ["exitCode": .int(0), "durationMs": .int(37), "oomKilled": .bool(false)]),
        AuditRecord(
            type: "file.written", sandbox: sandbox, callerUID: 1000, callerPID: 4242,
            fields: ["path": .string("/workspace/in.txt"), "bytes": .int(5), "sha256": .string("x")]),
        AuditRecord(
            type: "api.denied", sandbox: sandbox, callerUID: 1001, callerPID: 77, outcome: "denied",
            fields: ["reason": .string("not the owner")]),
        AuditRecord(type: "sandbox.deleted", sandbox: sandbox, fields: ["reason": .string("timeout")]),
    ]
}

/// The built products (`safespace`), as the integration tests find them.
let buildDir: String = {
    if let env = ProcessInfo.processInfo.environment["SAFESPACE_BUILD_DIR"] { return env }
    var url = Bundle.main.bundleURL
    for _ in 0..<4 {
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("safespace").path) { return url.path }
        url.deleteLastPathComponent()
    }
    return FileManager.default.currentDirectoryPath + "/.build/debug"
}()

struct Output {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a program to completion; stdout and stderr through files (no pipe to fill).
func run(_ path: String, _ args: [String]) throws -> Output {
    let dir = try TempDir("run")
    defer { dir.remove() }
    _ = FileManager.default.createFile(atPath: dir.path + "/out", contents: nil)
    _ = FileManager.default.createFile(atPath: dir.path + "/err", contents: nil)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    p.standardInput = FileHandle.nullDevice
    p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.path + "/out"))
    p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.path + "/err"))
    try p.run()
    p.waitUntilExit()
    return Output(
        status: p.terminationStatus,
        stdout: (try? String(contentsOfFile: dir.path + "/out", encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOfFile: dir.path + "/err", encoding: .utf8)) ?? "")
}
