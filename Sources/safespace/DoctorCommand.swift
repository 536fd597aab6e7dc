/// `safespace doctor`: whether this host can run SafeSpace (HostChecks).
import ArgumentParser
import HostChecks

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check that this host can run SafeSpace sandboxes and the CRI handlers.",
        discussion: """
            Prints one line per check, STATUS NAME REASON: ok, warn (SafeSpace runs with a \
            feature limited) or fail (it cannot run until fixed), then a summary. Exits 0 when \
            no check failed, 1 otherwise. scripts/install-node --check runs it.
            """)

    @Flag(help: "The CRI plugin applies no AppArmor profile (scripts/install-node --cri-disable-apparmor).")
    var criDisableApparmor = false

    func run() throws {
        let report = HostDoctor(criDisablesAppArmor: criDisableApparmor).run()
        for check in report.checks { print(check) }
        if report.passed {
            print(
                "safespace doctor: the host can run SafeSpace \(report.offersHigh ? "(both handlers)" : "(safespace only; safespace-high is not offered)")"
            )
        } else {
            print(
                "safespace doctor: the host cannot run SafeSpace: \(report.failures.map(\.name).joined(separator: ", ")) failed"
            )
            throw ExitCode(1)
        }
    }
}
