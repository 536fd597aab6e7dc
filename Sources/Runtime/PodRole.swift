import LinuxKernel

/// A container's place in a Kubernetes pod, from the annotations containerd's CRI
/// (`io.kubernetes.cri.container-type`, `io.kubernetes.cri.sandbox-id`) or CRI-O
/// (`io.kubernetes.cri-o.ContainerType`, `io.kubernetes.cri-o.SandboxID`) put in every spec —
/// the same annotations runsc reads (runsc/specutils: ShouldCreateSandbox, SandboxID).
public enum PodRole: Equatable, Sendable {
    /// Not in a pod (no annotations): a sandbox of its own.
    case standalone
    /// The pod sandbox (pause) container: the gVisor sandbox every container of the pod runs in.
    case sandbox
    /// An application container of the pod whose sandbox container is `sandboxID`.
    case container(sandboxID: String)

    package static let typeKeys = ["io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType"]
    package static let sandboxKeys = ["io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID"]

    /// - Throws: `RuntimeError` naming the annotation for an unknown container type, or a
    ///   `container` without a sandbox id.
    public static func of(_ annotations: [String: String]?) throws -> PodRole {
        guard let annotations, let key = typeKeys.first(where: { annotations[$0] != nil }), let type = annotations[key]
        else {
            return .standalone
        }
        switch type {
        case "sandbox": return .sandbox
        case "container":
            guard let sandbox = sandboxKeys.lazy.compactMap({ annotations[$0] }).first(where: { !$0.isEmpty }) else {
                throw RuntimeError(
                    .invalidSpec, field: "annotations[\(key)]",
                    "\"container\" without annotations[\(sandboxKeys[0])]: the pod sandbox to run in is not named")
            }
            return .container(sandboxID: sandbox)
        default:
            throw RuntimeError(
                .invalidSpec, field: "annotations[\(key)]",
                "unknown container type \"\(type)\" (expected sandbox or container)")
        }
    }
}
