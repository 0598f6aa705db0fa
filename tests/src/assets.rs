use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The Kubernetes version that `hack/build-control-plane.sh` builds (`KUBE_VERSION` in
/// hack/lib.sh); k8s-openapi's `v1_35` feature matches it.
pub const KUBE_VERSION: &str = "1.35.4";

const BINARIES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
];

/// Where the control-plane binaries are: `$KUBEBUILDER_ASSETS` (the envtest convention) when
/// set, else `$FERROVIRT_CACHE/k8s-v<version>` (`FERROVIRT_CACHE` defaults to
/// `~/.cache/ferrovirt`).
#[derive(Clone, Debug)]
pub struct Assets {
    dir: PathBuf,
}

impl Assets {
    /// Finds the binaries, or fails naming the missing ones and how to build them.
    pub fn locate() -> Result<Self> {
        let dir = match std::env::var_os("KUBEBUILDER_ASSETS") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => cache_dir().join(format!("k8s-v{KUBE_VERSION}")),
        };
        Self::in_dir(dir)
    }

    pub fn in_dir(dir: PathBuf) -> Result<Self> {
        let missing: Vec<&str> = BINARIES
            .iter()
            .copied()
            .filter(|b| !is_executable(&dir.join(b)))
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingBinaries {
                dir,
                missing: missing.join(", "),
            });
        }
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn kubectl(&self) -> PathBuf {
        self.bin("kubectl")
    }
}

/// hack/lib.sh's cache directory (`$FERROVIRT_CACHE`, else `$XDG_CACHE_HOME/ferrovirt`,
/// else `~/.cache/ferrovirt`).
pub use ferrovirt_runtime::cache_dir;

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
