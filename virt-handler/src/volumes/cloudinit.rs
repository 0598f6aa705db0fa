//! cloud-init NoCloud: the files of a `cidata` disk, and the data of its Secrets.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use base64::Engine;
use crds::CloudInitNoCloudSource;
use ferrovirt_node_contract::paths::CloudInitSecret;

use super::launcher_root::{SECRET_MAX_BYTES, open_in_root};
use crate::{Error, Result};

/// User and network data read from a volume's Secrets (`userDataSecretRef`,
/// `networkDataSecretRef`); `None` where the volume names no Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretData {
    pub user: Option<Vec<u8>>,
    pub network: Option<Vec<u8>>,
}

/// Reads the Secrets of the cloud-init volume `volume` (at `index` in `spec.volumes`) as
/// the launcher pod has them mounted (`CloudInitSecret::dir_in_pod`), through
/// `launcher_root`, the launcher's `/proc/<pid>/root`: the first key of KubeVirt's two
/// (`userdata`, then `userData`; `networkdata`, then `networkData`). Paths resolve inside
/// that root (`openat2` with `RESOLVE_IN_ROOT`): the links of the node's secret volume
/// (`userdata -> ..data/userdata`) are followed, and nothing leads outside the launcher's
/// file tree. A referenced Secret without either key fails, naming the field.
pub fn read_secrets(
    volume: &str,
    index: usize,
    source: &CloudInitNoCloudSource,
    launcher_root: Option<&Path>,
) -> Result<SecretData> {
    let mut out = SecretData::default();
    for (which, secret, field, slot) in [
        (
            CloudInitSecret::UserData,
            &source.user_data_secret_ref,
            "userDataSecretRef",
            &mut out.user,
        ),
        (
            CloudInitSecret::NetworkData,
            &source.network_data_secret_ref,
            "networkDataSecretRef",
            &mut out.network,
        ),
    ] {
        let Some(secret) = secret else { continue };
        let field = format!("spec.volumes[{index}].cloudInitNoCloud.{field}");
        let fail = |m: String| Error::volume(volume, format!("{field}: {m}"));
        let root = launcher_root.ok_or_else(|| {
            fail(
                "the launcher's files are not visible from virt-handler (it needs the host's \
                 PID namespace) to read the Secret"
                    .into(),
            )
        })?;
        let root_dir = File::open(root).map_err(|e| fail(format!("{}: {e}", root.display())))?;
        let dir = which.dir_in_pod(index);
        let mut found = None;
        for key in which.keys() {
            match open_in_root(&root_dir, &format!("{dir}/{key}")) {
                Ok(f) => {
                    found = Some((key, f));
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(fail(format!("{dir}/{key} in the launcher pod: {e}"))),
            }
        }
        let Some((key, file)) = found else {
            let [a, b] = which.keys();
            return Err(fail(format!(
                "Secret {:?} has no key {a} or {b}",
                secret.name
            )));
        };
        let meta = file
            .metadata()
            .map_err(|e| fail(format!("key {key}: {e}")))?;
        if !meta.is_file() {
            return Err(fail(format!(
                "Secret {:?}: key {key} is not a file in the launcher pod",
                secret.name
            )));
        }
        let mut data = Vec::new();
        file.take(SECRET_MAX_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(|e| fail(format!("reading key {key}: {e}")))?;
        if data.len() as u64 > SECRET_MAX_BYTES {
            return Err(fail(format!(
                "Secret {:?}: key {key} holds more than {SECRET_MAX_BYTES} bytes",
                secret.name
            )));
        }
        tracing::info!(volume, secret = %secret.name, key, bytes = data.len(), "read cloud-init data from its Secret");
        *slot = Some(data);
    }
    Ok(out)
}

/// `meta-data`: the instance id (the VMI's uid, so cloud-init runs once per VMI) and the
/// hostname.
pub fn meta_data(uid: &str, hostname: &str) -> String {
    format!("instance-id: {uid}\nlocal-hostname: {hostname}\n")
}

fn decode(
    volume: &str,
    field: &str,
    text: &Option<String>,
    b64: &Option<String>,
) -> Result<Option<Vec<u8>>> {
    match (text, b64) {
        (Some(_), Some(_)) => Err(Error::volume(
            volume,
            format!("set at most one of {field} and {field}Base64"),
        )),
        (Some(t), None) => Ok(Some(t.as_bytes().to_vec())),
        (None, Some(b)) => {
            let clean: String = b.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .map(Some)
                .map_err(|e| Error::volume(volume, format!("{field}Base64 is not base64: {e}")))
        }
        (None, None) => Ok(None),
    }
}

/// The files of the `cidata` ISO: `user-data` (empty when not given), `meta-data`, and
/// `network-config` when network data is given, inline or in `secrets` (read by
/// [`read_secrets`]).
pub fn nocloud_files(
    volume: &str,
    source: &CloudInitNoCloudSource,
    secrets: &SecretData,
    uid: &str,
    hostname: &str,
) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let user = match &secrets.user {
        Some(data) => Some(data.clone()),
        None => decode(
            volume,
            "userData",
            &source.user_data,
            &source.user_data_base64,
        )?,
    };
    let mut files = vec![
        ("user-data", user.unwrap_or_default()),
        ("meta-data", meta_data(uid, hostname).into_bytes()),
    ];
    let network = match &secrets.network {
        Some(data) => Some(data.clone()),
        None => decode(
            volume,
            "networkData",
            &source.network_data,
            &source.network_data_base64,
        )?,
    };
    if let Some(net) = network {
        files.push(("network-config", net));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64_and_adds_meta_data() {
        let source = CloudInitNoCloudSource {
            user_data_base64: Some("I2Nsb3VkLWNvbmZpZwo=".into()),
            network_data: Some("version: 2\n".into()),
            ..Default::default()
        };
        let files = nocloud_files("ci", &source, &SecretData::default(), "uid-1", "vm1").unwrap();
        assert_eq!(files[0], ("user-data", b"#cloud-config\n".to_vec()));
        assert_eq!(files[1].1, b"instance-id: uid-1\nlocal-hostname: vm1\n");
        assert_eq!(files[2], ("network-config", b"version: 2\n".to_vec()));
        let bad = CloudInitNoCloudSource {
            user_data_base64: Some("!!".into()),
            ..Default::default()
        };
        assert!(
            nocloud_files("ci", &bad, &SecretData::default(), "u", "h")
                .unwrap_err()
                .to_string()
                .contains("userDataBase64")
        );
    }

    /// A launcher's file tree with the pod's secret volumes as the node lays them out
    /// (kubelet's atomic writer: each key a link into `..data`, itself a link).
    fn launcher_tree(
        index: usize,
        which: CloudInitSecret,
        keys: &[(&str, &[u8])],
    ) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root
            .path()
            .join(which.dir_in_pod(index).trim_start_matches('/'));
        let version = dir.join("..2026_12_03_04_00_00.1");
        std::fs::create_dir_all(&version).unwrap();
        std::os::unix::fs::symlink("..2026_12_03_04_00_00.1", dir.join("..data")).unwrap();
        for (key, data) in keys {
            std::fs::write(version.join(key), data).unwrap();
            std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key)).unwrap();
        }
        root
    }

    #[test]
    fn secrets_are_read_where_the_pod_mounts_them_first_key_first() {
        let source = CloudInitNoCloudSource {
            user_data_secret_ref: Some(crds::LocalObjectReference { name: "ud".into() }),
            ..Default::default()
        };
        // KubeVirt's second key, and both (the first wins).
        let tree = launcher_tree(
            1,
            CloudInitSecret::UserData,
            &[("userData", b"#cloud-config\nb\n")],
        );
        let read = read_secrets("ci", 1, &source, Some(tree.path())).unwrap();
        assert_eq!(read.user.as_deref(), Some(&b"#cloud-config\nb\n"[..]));
        assert_eq!(read.network, None);
        let tree = launcher_tree(
            1,
            CloudInitSecret::UserData,
            &[("userData", b"second"), ("userdata", b"first")],
        );
        let read = read_secrets("ci", 1, &source, Some(tree.path())).unwrap();
        assert_eq!(read.user.as_deref(), Some(&b"first"[..]));
        // The Secret's data wins over nothing inline, and goes into user-data.
        let files = nocloud_files("ci", &source, &read, "u", "h").unwrap();
        assert_eq!(files[0], ("user-data", b"first".to_vec()));

        // A Secret without the key, and a launcher virt-handler cannot see: named.
        let tree = launcher_tree(1, CloudInitSecret::UserData, &[("other", b"x")]);
        let err = read_secrets("ci", 1, &source, Some(tree.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.volumes[1].cloudInitNoCloud.userDataSecretRef")
                && err.contains("Secret \"ud\" has no key userdata or userData"),
            "{err}"
        );
        let err = read_secrets("ci", 1, &source, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("userDataSecretRef") && err.contains("PID namespace"),
            "{err}"
        );
    }

    #[test]
    fn a_link_out_of_the_launchers_tree_stays_inside_it() {
        let source = CloudInitNoCloudSource {
            network_data_secret_ref: Some(crds::LocalObjectReference { name: "nd".into() }),
            ..Default::default()
        };
        let tree = launcher_tree(0, CloudInitSecret::NetworkData, &[]);
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), b"host secret").unwrap();
        let dir = tree.path().join(
            CloudInitSecret::NetworkData
                .dir_in_pod(0)
                .trim_start_matches('/'),
        );
        std::os::unix::fs::symlink(outside.path(), dir.join("networkdata")).unwrap();
        std::os::unix::fs::symlink(
            "../../../../../../../../..".to_owned() + outside.path().to_str().unwrap(),
            dir.join("networkData"),
        )
        .unwrap();
        let err = read_secrets("ci", 0, &source, Some(tree.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Secret \"nd\" has no key networkdata or networkData"),
            "{err}"
        );
        // The same file inside the tree is read.
        let inside = tree.path().join(outside.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::write(&inside, b"version: 2\n").unwrap();
        let read = read_secrets("ci", 0, &source, Some(tree.path())).unwrap();
        assert_eq!(read.network.as_deref(), Some(&b"version: 2\n"[..]));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Base64 of `data`, broken by whitespace where `breaks` says, as YAML block
        /// scalars and `base64 -w 76` produce it.
        fn wrapped(data: &[u8], breaks: &[usize]) -> String {
            let plain = base64::engine::general_purpose::STANDARD.encode(data);
            let mut out = String::new();
            for (i, c) in plain.chars().enumerate() {
                if breaks.contains(&i) {
                    out.push_str(if i % 2 == 0 { "\n" } else { " \t" });
                }
                out.push(c);
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            /// Binary user data, any size up to a few times KubeVirt's 2048-byte limit (the
            /// webhook enforces the limit; the builder must not care), survives base64.
            #[test]
            fn binary_user_data_survives_base64(
                data in proptest::collection::vec(any::<u8>(), 0..8192),
                breaks in proptest::collection::vec(0usize..12000, 0..20),
            ) {
                let source = CloudInitNoCloudSource {
                    user_data_base64: Some(wrapped(&data, &breaks)),
                    network_data_base64: Some(wrapped(&data, &[])),
                    ..Default::default()
                };
                let files = nocloud_files("ci", &source, &SecretData::default(), "u", "h").map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&files[0], &("user-data", data.clone()));
                prop_assert_eq!(&files[2], &("network-config", data));
            }

            /// Unicode text is written as its UTF-8 bytes, whatever it holds.
            #[test]
            fn unicode_user_data_is_its_utf8(text in "\\PC{0,3000}") {
                let source = CloudInitNoCloudSource {
                    user_data: Some(text.clone()),
                    ..Default::default()
                };
                let files = nocloud_files("ci", &source, &SecretData::default(), "u", "h").map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&files[0].1, text.as_bytes());
            }

            /// Anything in the base64 fields either decodes or is refused naming the field.
            #[test]
            fn any_base64_field_decodes_or_names_itself(text in "\\PC{0,200}", network in any::<bool>()) {
                let source = if network {
                    CloudInitNoCloudSource { network_data_base64: Some(text), ..Default::default() }
                } else {
                    CloudInitNoCloudSource { user_data_base64: Some(text), ..Default::default() }
                };
                if let Err(e) = nocloud_files("ci", &source, &SecretData::default(), "u", "h") {
                    let field = if network { "networkDataBase64" } else { "userDataBase64" };
                    prop_assert!(e.to_string().contains(field), "{}", e);
                }
            }
        }
    }
}
