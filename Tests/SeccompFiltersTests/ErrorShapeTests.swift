import Errors
import Testing

@testable import SeccompFilters

/// SeccompError in the common shape.
struct SeccompErrorShapeTests {
    @Test("an unknown action: invalidProfile at its field, the message after it")
    func unknownAction() {
        let error = #expect(throws: SeccompError.self) {
            try SeccompNames.action("SCMP_ACT_BOGUS", errnoRet: nil, field: "linux.seccomp.syscalls[3].action")
        }
        #expect(
            error?.code == .invalidProfile && error?.codeName == "seccomp.invalidProfile"
                && error?.category == .invalidArgument)
        #expect(error?.field == "linux.seccomp.syscalls[3].action" && error?.errno == nil)
        #expect(
            error?.description.hasPrefix("linux.seccomp.syscalls[3].action: unknown action \"SCMP_ACT_BOGUS\"") == true)
    }

    @Test("a profile file's error names the file and keeps the inner error's code")
    func decode() {
        let error = #expect(throws: SeccompError.self) {
            try SeccompProfile.decode(Array(#"{"defaultAction": 3}"#.utf8), source: "p.json")
        }
        #expect(error?.code == .invalidProfile && error?.field == "p.json" && error?.operation == "decode")
    }

    @Test("a libseccomp failure carries the errno; without a field the description is the message")
    func libseccomp() {
        let error = SeccompError(
            .libseccompFailed, "seccomp_notify_receive: Bad address", operation: "seccomp_notify_receive", errno: 14)
        #expect(error.category == .internal && error.errno == 14 && error.field == nil)
        #expect(error.description == "seccomp_notify_receive: Bad address")
    }
}
