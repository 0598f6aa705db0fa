//! virt-handler's HTTPS API for virt-api (console, VNC, pause, unpause over mutual TLS):
//! how virt-api finds a node's handler and what both sides expect of the certificates.
//! docs/virt-handler.md ("The server for virt-api") has the whole picture.

/// Annotation on the Node with the `host:port` virt-api dials to reach that node's handler.
/// virt-handler writes it (its `--advertise-address` and the port of `--server-listen`).
pub const ADDRESS_ANNOTATION: &str = "ferrovirt.io/virt-handler-address";
/// KubeVirt's port of virt-handler's console server.
pub const DEFAULT_PORT: u16 = 8186;
/// Secret (in the install namespace) with the handlers' serving certificate and the CA
/// bundle its clients must chain to: `tls.crt`, `tls.key`, `ca.crt`. virt-api writes it.
pub const SERVER_CERTS_SECRET: &str = "kubevirt-virt-handler-server-certs";
/// The name in the handlers' serving certificate that virt-api checks, whatever address
/// it dialled (a node's address changes; the certificate is shared by all handlers).
pub const SERVER_NAME: &str = "virt-handler.kubevirt.svc";

/// The handler's path for a VMI's `subresource` (`console`, `vnc`, `pause`, `unpause`);
/// `uid` is the VMI's uid, which names its directory on the node.
pub fn vmi_path(namespace: &str, name: &str, subresource: &str, uid: &str) -> String {
    format!("/v1/namespaces/{namespace}/virtualmachineinstances/{name}/{subresource}?uid={uid}")
}

/// Whether `uid` can be a VMI uid (and so a directory name under the run dir): letters,
/// digits and `-`, 1 to 64 characters. Nothing else reaches a path.
pub fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_never_leave_the_run_dir() {
        assert!(valid_uid("0f8e7a2c-1b2d-4c3e-9f00-123456789abc"));
        for bad in ["", "..", "a/b", "../etc", "a b", &"x".repeat(65)] {
            assert!(!valid_uid(bad), "{bad:?}");
        }
        assert_eq!(
            vmi_path("ns", "vm", "console", "u1"),
            "/v1/namespaces/ns/virtualmachineinstances/vm/console?uid=u1"
        );
    }
}
