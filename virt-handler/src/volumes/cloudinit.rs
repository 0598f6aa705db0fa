//! cloud-init NoCloud: the files of a `cidata` disk.

use base64::Engine;
use crds::CloudInitNoCloudSource;

use crate::{Error, Result};

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
/// `network-config` when network data is given.
pub fn nocloud_files(
    volume: &str,
    source: &CloudInitNoCloudSource,
    uid: &str,
    hostname: &str,
) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let user = decode(
        volume,
        "userData",
        &source.user_data,
        &source.user_data_base64,
    )?
    .unwrap_or_default();
    let mut files = vec![
        ("user-data", user),
        ("meta-data", meta_data(uid, hostname).into_bytes()),
    ];
    if let Some(net) = decode(
        volume,
        "networkData",
        &source.network_data,
        &source.network_data_base64,
    )? {
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
        let files = nocloud_files("ci", &source, "uid-1", "vm1").unwrap();
        assert_eq!(files[0], ("user-data", b"#cloud-config\n".to_vec()));
        assert_eq!(files[1].1, b"instance-id: uid-1\nlocal-hostname: vm1\n");
        assert_eq!(files[2], ("network-config", b"version: 2\n".to_vec()));
        let bad = CloudInitNoCloudSource {
            user_data_base64: Some("!!".into()),
            ..Default::default()
        };
        assert!(
            nocloud_files("ci", &bad, "u", "h")
                .unwrap_err()
                .to_string()
                .contains("userDataBase64")
        );
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
                let files = nocloud_files("ci", &source, "u", "h").map_err(|e| TestCaseError::fail(e.to_string()))?;
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
                let files = nocloud_files("ci", &source, "u", "h").map_err(|e| TestCaseError::fail(e.to_string()))?;
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
                if let Err(e) = nocloud_files("ci", &source, "u", "h") {
                    let field = if network { "networkDataBase64" } else { "userDataBase64" };
                    prop_assert!(e.to_string().contains(field), "{}", e);
                }
            }
        }
    }
}
