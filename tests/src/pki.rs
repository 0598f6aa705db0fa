//! The cluster's certificates and keys, generated once per control-plane directory.
//!
//! Two CAs, like kubeadm: `ca` signs the API server's serving certificate and every client
//! certificate (admin, controller manager, scheduler, later nodes and Ferrovirt's
//! components); `front-proxy-ca` signs the certificate the API server presents to aggregated
//! API servers (virt-api), which they verify through `extension-apiserver-authentication`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::Result;
use crate::error::IoContext;

/// The first address of `--service-cluster-ip-range`: the `kubernetes` Service.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// Common name the API server's proxy client certificate carries; the only name
/// `--requestheader-allowed-names` accepts.
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// The files of a cluster's PKI, all in one directory.
#[derive(Clone, Debug)]
pub struct Pki {
    dir: PathBuf,
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

impl Pki {
    /// Uses the PKI in `dir` when it is complete, else generates a new one there.
    pub fn ensure(dir: &Path) -> Result<Self> {
        let pki = Self {
            dir: dir.to_path_buf(),
        };
        if pki.dir.join(".complete").exists() {
            return Ok(pki);
        }
        std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        tracing::debug!(dir = %dir.display(), "generating cluster certificates");

        pki.new_ca("ca", "ferrovirt-ca")?;
        pki.new_ca("front-proxy-ca", "ferrovirt-front-proxy-ca")?;
        let mut sans = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP)),
        ];
        for dns in [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ] {
            sans.push(SanType::DnsName(dns.try_into()?));
        }
        pki.issue(
            "ca",
            "apiserver",
            "kube-apiserver",
            &[],
            Usage::Server,
            sans,
        )?;
        pki.issue(
            "ca",
            "admin",
            "ferrovirt-admin",
            &["system:masters"],
            Usage::Client,
            vec![],
        )?;
        pki.issue(
            "ca",
            "kube-controller-manager",
            "system:kube-controller-manager",
            &[],
            Usage::Client,
            vec![],
        )?;
        pki.issue(
            "ca",
            "kube-scheduler",
            "system:kube-scheduler",
            &[],
            Usage::Client,
            vec![],
        )?;
        pki.issue(
            "front-proxy-ca",
            FRONT_PROXY_CLIENT,
            FRONT_PROXY_CLIENT,
            &[],
            Usage::Client,
            vec![],
        )?;

        // Service-account tokens: the API server signs them with sa.key and verifies them
        // with sa.pub; the controller manager signs legacy tokens with sa.key too.
        let sa = KeyPair::generate()?;
        pki.write("sa.key", &sa.serialize_pem())?;
        pki.write("sa.pub", &sa.public_key_pem())?;

        pki.write(".complete", "")?;
        Ok(pki)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<name>.crt`
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }

    /// `<dir>/<name>.key`
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// Issues `<name>.crt`/`<name>.key` signed by the CA `<ca>` (`ca` or `front-proxy-ca`).
    /// `orgs` become the Organization entries, which Kubernetes reads as groups.
    pub fn issue(
        &self,
        ca: &str,
        name: &str,
        common_name: &str,
        orgs: &[&str],
        usage: Usage,
        sans: Vec<SanType>,
    ) -> Result<()> {
        let ca_key_pem = std::fs::read_to_string(self.key(ca))
            .context(|| format!("reading {}", self.key(ca).display()))?;
        let issuer = Issuer::new(
            ca_params(&self.ca_common_name(ca)),
            KeyPair::from_pem(&ca_key_pem)?,
        );

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for org in orgs {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *org);
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        self.write(&format!("{name}.key"), &key.serialize_pem())?;
        self.write(&format!("{name}.crt"), &cert.pem())?;
        Ok(())
    }

    fn new_ca(&self, name: &str, common_name: &str) -> Result<()> {
        let key = KeyPair::generate()?;
        let cert = ca_params(common_name).self_signed(&key)?;
        self.write(&format!("{name}.key"), &key.serialize_pem())?;
        self.write(&format!("{name}.crt"), &cert.pem())?;
        self.write(&format!("{name}.name"), common_name)?;
        Ok(())
    }

    fn ca_common_name(&self, ca: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{ca}.name")))
            .unwrap_or_else(|_| ca.to_string())
    }

    fn write(&self, file: &str, contents: &str) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .context(|| format!("writing {}", path.display()))?;
        f.write_all(contents.as_bytes())
            .context(|| format!("writing {}", path.display()))
    }
}

/// A CA's parameters. They are a pure function of its name, so an issuer can be rebuilt
/// from the CA's key alone (the key identifier derives from the public key).
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::ensure(dir.path()).unwrap();
        for name in [
            "ca",
            "front-proxy-ca",
            "apiserver",
            "admin",
            "kube-controller-manager",
            "kube-scheduler",
            FRONT_PROXY_CLIENT,
        ] {
            let cert = std::fs::read_to_string(pki.cert(name)).unwrap();
            assert!(
                cert.starts_with("-----BEGIN CERTIFICATE-----"),
                "{name}.crt"
            );
            assert!(pki.key(name).exists(), "{name}.key");
        }
        let ca = std::fs::read(pki.cert("ca")).unwrap();
        let again = Pki::ensure(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(again.cert("ca")).unwrap(),
            ca,
            "a complete PKI is reused"
        );
    }

    #[test]
    fn issues_more_certificates_from_the_persisted_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::ensure(dir.path()).unwrap();
        pki.issue(
            "ca",
            "node",
            "system:node:devnode",
            &["system:nodes"],
            Usage::Client,
            vec![],
        )
        .unwrap();
        assert!(
            std::fs::read_to_string(pki.cert("node"))
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
    }
}
