extension EgressFilterConfiguration {
    /// Checks upstream server entries as `EgressFilter.init` reads them ("ip", "ip:port",
    /// "[v6]:port"; port 1-65535), for a configuration read before any filter is made.
    /// - Throws: `EgressFilterError.invalidAddress` (field `upstreamDNS`) naming the entry,
    ///   `.noUpstreamDNS` for an empty list.
    public static func checkUpstreamDNS(_ entries: [String]) throws(EgressFilterError) {
        _ = try UpstreamResolver.parse(entries)
    }
}
