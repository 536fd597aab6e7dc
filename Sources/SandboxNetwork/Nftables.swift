/// libnftables through its JSON API (libnftables(3), libnftables-json(5)): one command buffer
/// per call, each a single transaction of the kernel's nf_tables (all or nothing).
import CNftables
import Foundation

/// An nftables context of this process's network namespace.
final class Nftables {
    private let context: OpaquePointer

    init() throws {
        guard let context = nft_ctx_new(UInt32(NFT_CTX_DEFAULT)) else {
            throw NetworkError(.failed, "nft_ctx_new failed", operation: "nft_ctx_new")
        }
        self.context = context
        nft_ctx_output_set_flags(context, UInt32(NFT_CTX_OUTPUT_JSON))
        _ = nft_ctx_buffer_output(context)
        _ = nft_ctx_buffer_error(context)
    }

    deinit { nft_ctx_free(context) }

    /// Runs `commands` (`{"nftables": [...]}`) as one transaction.
    /// - Returns: what nft printed (JSON for list commands).
    /// - Throws: `NetworkError` `.failed` with libnftables' error text.
    @discardableResult
    func run(_ commands: [[String: Any]]) throws -> String {
        let data = try JSONSerialization.data(withJSONObject: ["nftables": commands], options: [.sortedKeys])
        let text = String(decoding: data, as: UTF8.self)
        let rc = nft_run_cmd_from_buffer(context, text)
        let output = nft_ctx_get_output_buffer(context).map { String(cString: $0) } ?? ""
        let error = nft_ctx_get_error_buffer(context).map { String(cString: $0) } ?? ""
        guard rc == 0 else {
            let reason = error.trimmingCharacters(in: .whitespacesAndNewlines)
            throw NetworkError(.failed, "nftables: \(reason.isEmpty ? "error \(rc)" : reason)", operation: "nft")
        }
        return output
    }

    /// The names of the `inet` tables.
    func inetTables() throws -> [String] {
        let output = try run([["list": ["tables": ["family": "inet"]]]])
        return Self.objects(output, "table").compactMap {
            $0["family"] as? String == "inet" ? $0["name"] as? String : nil
        }
    }

    /// The named counters of inet table `table`: name -> packets.
    func counters(table: String) throws -> [String: UInt64] {
        let output = try run([["list": ["table": ["family": "inet", "name": table]]]])
        var out: [String: UInt64] = [:]
        for counter in Self.objects(output, "counter") where counter["table"] as? String == table {
            if let name = counter["name"] as? String, let packets = counter["packets"] as? NSNumber {
                out[name] = packets.uint64Value
            }
        }
        return out
    }

    /// Removes inet table `table` with everything in it; nothing when there is none. (`add`
    /// then `delete` in one transaction: nft 1.0.6 has no `destroy`.)
    func deleteTable(_ table: String) throws {
        try run([
            ["add": ["table": ["family": "inet", "name": table]]],
            ["delete": ["table": ["family": "inet", "name": table]]],
        ])
    }

    private static func objects(_ output: String, _ kind: String) -> [[String: Any]] {
        guard let json = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
            let items = json["nftables"] as? [[String: Any]]
        else { return [] }
        return items.compactMap { $0[kind] as? [String: Any] }
    }
}
