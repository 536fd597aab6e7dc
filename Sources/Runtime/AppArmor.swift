import LinuxKernel

/// Whether the kernel has AppArmor enabled (/sys/module/apparmor/parameters/enabled is "Y").
enum AppArmor {
    static var isEnabled: Bool {
        (try? Files.readString("/sys/module/apparmor/parameters/enabled"))?.trimmed == "Y"
    }
}
