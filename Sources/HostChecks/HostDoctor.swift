import LinuxKernel

/// The host checks: containerd, cgroups, user namespaces, libseccomp, CAP_SYS_RESOURCE,
/// AppArmor and gVisor. `safespace doctor` prints them; scripts/install-node --check and
/// its install read that output; the daemon calls `run()` at start.
///
/// A `fail` means SafeSpace cannot run here (or containerd cannot serve its handlers); a
/// `warn` names a limited feature. Sources: cgroups(7), cgroup-v2.rst, user_namespaces(7),
/// capabilities(7), proc(5).
public struct HostDoctor: Sendable {
    public var environment: HostEnvironment
    /// scripts/install-node --cri-disable-apparmor: the CRI plugin applies no AppArmor
    /// profile, which changes what the AppArmor check says.
    public var criDisablesAppArmor: Bool

    public init(environment: HostEnvironment = .current(), criDisablesAppArmor: Bool = false) {
        self.environment = environment
        self.criDisablesAppArmor = criDisablesAppArmor
    }

    /// Runs every check, in a fixed order.
    public func run() -> HostReport {
        var checks: [HostCheck] = []
        checks.append(containerd())
        checks += cgroups()
        checks.append(userNamespaces())
        checks.append(libseccomp())
        checks.append(capSysResource())
        checks.append(appArmor())
        checks.append(gVisor())
        return HostReport(checks: checks)
    }

    typealias Name = HostCheck.Name

    /// containerd 1.6 or newer; 2.x is refused (its CRI plugin has other table names).
    func containerd() -> HostCheck {
        guard let program = environment.program("containerd") else {
            return HostCheck(
                Name.containerd, .fail,
                "containerd is not installed (apt-get install containerd, or your distribution's package)")
        }
        // `containerd github.com/containerd/containerd 1.6.20~ds1 <commit>`: the third word.
        guard let out = environment.run([program, "--version"])?.output,
            let word = out.split(whereSeparator: \.isWhitespace).dropFirst(2).first
        else {
            return HostCheck(Name.containerd, .fail, "\(program) --version printed no version")
        }
        var version = Substring(word)
        if version.hasPrefix("v") { version = version.dropFirst() }
        version = version.prefix { !"~+-".contains($0) }
        let v = String(version)
        if (Int(v.prefix { $0 != "." }) ?? 0) >= 2 {
            return HostCheck(
                Name.containerd, .fail,
                "containerd \(v): 2.x is not handled yet (add the tables of systemd/containerd/safespace-runtimes.toml under plugins.\"io.containerd.cri.v1.runtime\" by hand)"
            )
        }
        guard Self.version(v, atLeast: "1.6") else {
            return HostCheck(Name.containerd, .fail, "containerd \(v): 1.6 or newer is needed")
        }
        return HostCheck(Name.containerd, .ok, "containerd \(v)")
    }

    /// The cgroup file system at /sys/fs/cgroup (from mountinfo) and the controllers the
    /// runtime limits with: cpu, memory, pids on v2 (available at the root and enabled for
    /// its children); cpu, cpuacct, memory, pids, devices, freezer, cpuset mounted on v1.
    func cgroups() -> [HostCheck] {
        let mounts = MountInfo.parse(environment.read("/proc/self/mountinfo") ?? "")
        let fstype = mounts.last { $0.mountPoint == "/sys/fs/cgroup" }?.fstype
        var checks: [HostCheck] = []
        switch fstype {
        case "cgroup2":
            let controllers = words(environment.read("/sys/fs/cgroup/cgroup.controllers"))
            checks.append(
                HostCheck(
                    Name.cgroup, .ok,
                    "cgroup v2 (unified); controllers: \(controllers.isEmpty ? "none" : controllers.joined(separator: " "))"
                ))
            for c in ["cpu", "memory", "pids"] {
                checks.append(
                    controllers.contains(c)
                        ? HostCheck(Name.controller(c), .ok, "cgroup v2 controller \(c)")
                        : HostCheck(Name.controller(c), .fail, "cgroup v2 controller \(c) is not available at the root")
                )
            }
            let subtree = words(environment.read("/sys/fs/cgroup/cgroup.subtree_control"))
            for c in ["cpu", "memory", "pids"] {
                checks.append(
                    subtree.contains(c)
                        ? HostCheck(Name.delegated(c), .ok, "cgroup v2: \(c) is enabled below the root")
                        : HostCheck(
                            Name.delegated(c), .warn,
                            "cgroup v2: \(c) is not delegated below the root (cgroup.subtree_control: \(subtree.isEmpty ? "empty" : subtree.joined(separator: " "))); limits under it fail"
                        ))
            }
            if environment.program("systemctl") != nil, environment.isDirectory("/run/systemd/system") {
                checks.append(containerdDelegate())
            }
        case "tmpfs":
            let hybrid = mounts.last { $0.mountPoint == "/sys/fs/cgroup/unified" }?.fstype == "cgroup2"
            checks.append(HostCheck(Name.cgroup, .ok, "cgroup v1 (\(hybrid ? "hybrid" : "legacy"))"))
            let mounted = Set(mounts.filter { $0.fstype == "cgroup" }.flatMap(\.superOptions))
            for c in ["cpu", "cpuacct", "memory", "pids", "devices", "freezer", "cpuset"] {
                checks.append(
                    mounted.contains(c)
                        ? HostCheck(Name.controller(c), .ok, "cgroup v1 controller \(c)")
                        : HostCheck(Name.controller(c), .fail, "cgroup v1 controller \(c) is not mounted"))
            }
        default:
            checks.append(HostCheck(Name.cgroup, .fail, "no cgroup file system at /sys/fs/cgroup"))
        }
        return checks
    }

    /// systemd gives containerd's pods' cgroups back to containerd only with Delegate=yes.
    func containerdDelegate() -> HostCheck {
        let systemctl = environment.program("systemctl")!
        let value = environment.run([systemctl, "show", "-p", "Delegate", "--value", "containerd"])?.output
        return value.map(trim) == "yes"
            ? HostCheck(Name.containerdDelegate, .ok, "containerd.service has Delegate=yes")
            : HostCheck(
                Name.containerdDelegate, .warn,
                "containerd.service lacks Delegate=yes: systemd may take back the cgroups of pods")
    }

    /// user_namespaces(7): user.max_user_namespaces = 0 disables them.
    func userNamespaces() -> HostCheck {
        let max = Int(trim(environment.read("/proc/sys/user/max_user_namespaces") ?? "")) ?? 0
        return max > 0
            ? HostCheck(Name.userNamespaces, .ok, "user namespaces (max_user_namespaces=\(max))")
            : HostCheck(
                Name.userNamespaces, .warn,
                "user namespaces are disabled (user.max_user_namespaces=0): bundles with a user namespace fail")
    }

    /// The seccomp compiler needs libseccomp 2.5.0 (SCMP_ACT_NOTIFY, SCMP_FLTATR_API_SYSRAWRC).
    func libseccomp() -> HostCheck {
        guard let v = environment.libseccompVersion else {
            return HostCheck(Name.libseccomp, .fail, "libseccomp is not installed (apt-get install libseccomp2)")
        }
        return Self.version(v, atLeast: "2.5.0")
            ? HostCheck(Name.libseccomp, .ok, "libseccomp \(v)")
            : HostCheck(Name.libseccomp, .fail, "libseccomp \(v): 2.5.0 or newer is needed")
    }

    /// Without CAP_SYS_RESOURCE a negative oom_score_adj (the pause container asks for -998)
    /// fails; containerd must then clamp scores (restrict_oom_score_adj).
    func capSysResource() -> HostCheck {
        let line = (environment.read("/proc/self/status") ?? "").split(separator: "\n").first {
            $0.hasPrefix("CapBnd:")
        }
        let mask = line.flatMap { UInt64(trim(String($0.dropFirst("CapBnd:".count))), radix: 16) } ?? 0
        let bit = UInt64(Capability.value(named: "CAP_SYS_RESOURCE") ?? 24)  // linux/capability.h
        return mask >> bit & 1 == 1
            ? HostCheck(Name.capSysResource, .ok, "CAP_SYS_RESOURCE")
            : HostCheck(
                Name.capSysResource, .warn,
                "CAP_SYS_RESOURCE is missing: the drop-in sets restrict_oom_score_adj = true")
    }

    /// containerd's CRI plugin gives every pod the profile cri-containerd.apparmor.d unless
    /// told not to; safespace-runtime refuses process.apparmorProfile.
    func appArmor() -> HostCheck {
        guard trim(environment.read("/sys/module/apparmor/parameters/enabled") ?? "") == "Y" else {
            return HostCheck(Name.appArmor, .ok, "AppArmor is off")
        }
        if criDisablesAppArmor {
            return HostCheck(
                Name.appArmor, .warn,
                "AppArmor is on; --cri-disable-apparmor: the CRI plugin applies no AppArmor profile to any pod (runc pods too)"
            )
        }
        return HostCheck(
            Name.appArmor, .warn,
            "AppArmor is on: containerd gives pods the profile cri-containerd.apparmor.d, which safespace-runtime refuses (process.apparmorProfile); SafeSpace pods need securityContext.appArmorProfile.type: Unconfined, or install with --cri-disable-apparmor"
        )
    }

    /// runsc for safespace-high. runsc before release-20240801 takes
    /// /proc/sys/net/core/rmem_default for a sign of the host's network namespace (gVisor
    /// issue 10704); kernels since ~6.11 show it in every one. safespace-runtime hides that
    /// directory from runsc's create and start of a pod sandbox, so this is a note.
    func gVisor() -> HostCheck {
        guard let runsc = environment.program("runsc") else {
            return HostCheck(
                Name.gVisor, .warn,
                "runsc (gVisor) is not installed: safespace-high is not offered on this node (apt-get install runsc, or gVisor's release)"
            )
        }
        let first = environment.run([runsc, "--version"])?.output.split(separator: "\n").first.map(String.init) ?? ""
        let date = Self.firstDate(first)
        let shown = date ?? first
        if let unshare = environment.program("unshare"),
            environment.run([unshare, "--net", "--", "test", "-e", "/proc/sys/net/core/rmem_default"])?.status == 0,
            (Int(date ?? "0") ?? 0) < 20_240_801
        {
            let kernel = trim(environment.read("/proc/sys/kernel/osrelease") ?? "?")
            return HostCheck(
                Name.gVisor, .ok,
                "runsc \(shown) (\(runsc)); it misreads pod network namespaces on kernel \(kernel) (gVisor issue 10704): safespace-runtime works around it"
            )
        }
        return HostCheck(Name.gVisor, .ok, "runsc \(shown) (\(runsc))")
    }

    /// The first run of eight digits in `text` (`release-20231009.0` -> `20231009`).
    static func firstDate(_ text: String) -> String? {
        let chars = Array(text)
        var i = 0
        while i + 8 <= chars.count {
            if chars[i..<(i + 8)].allSatisfy(\.isASCII) && chars[i..<(i + 8)].allSatisfy(\.isNumber) {
                return String(chars[i..<(i + 8)])
            }
            i += 1
        }
        return nil
    }

    /// `a >= b`, comparing dot-separated numeric components (`sort -V` for plain versions;
    /// a missing component is 0).
    static func version(_ a: String, atLeast b: String) -> Bool {
        func parts(_ s: String) -> [Int] {
            s.split(separator: ".").map { Int($0.prefix { $0.isNumber }) ?? 0 }
        }
        let x = parts(a)
        let y = parts(b)
        for i in 0..<max(x.count, y.count) {
            let m = i < x.count ? x[i] : 0
            let n = i < y.count ? y[i] : 0
            if m != n { return m > n }
        }
        return true
    }

    private func words(_ text: String?) -> [String] {
        (text ?? "").split(whereSeparator: \.isWhitespace).map(String.init)
    }

    private func trim(_ s: String) -> String {
        s.trimmed
    }
}
