//! The control plane shared by the tests of one test binary, and a namespace per test.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::OnceCell;

use crate::{ControlPlane, Preinstall, Result, Supervision, process};

static SHARED: OnceCell<std::result::Result<ControlPlane, String>> = OnceCell::const_new();

/// The control plane of this test binary, started on first use. It stops, and its temporary
/// directory is removed, when the binary exits; if the binary is killed, the processes die
/// with it and the next run removes the directory.
///
/// Panics with the reason (missing binaries and how to build them, or the failing
/// component's log tail) when it cannot start.
pub async fn shared() -> &'static ControlPlane {
    start_shared(&SHARED, Preinstall::FerrovirtApi).await
}

/// [`shared`] without Ferrovirt's CRDs and admission policies, for a test binary that
/// installs Ferrovirt as a user does (`helm install`). A binary uses one or the other.
pub async fn shared_bare() -> &'static ControlPlane {
    static BARE: OnceCell<std::result::Result<ControlPlane, String>> = OnceCell::const_new();
    start_shared(&BARE, Preinstall::Nothing).await
}

async fn start_shared(
    cell: &'static OnceCell<std::result::Result<ControlPlane, String>>,
    preinstall: Preinstall,
) -> &'static ControlPlane {
    init_tracing();
    let result = cell
        .get_or_init(|| async {
            let dir = match fresh_temp_dir() {
                Ok(dir) => dir,
                Err(e) => return Err(format!("creating a temporary directory: {e}")),
            };
            process::remove_at_exit(&dir);
            ControlPlane::start_with(&dir, Supervision::Tied, preinstall)
                .await
                .map_err(|e| error_chain(&e))
        })
        .await;
    match result {
        Ok(cp) => cp,
        Err(message) => panic!("the test control plane did not start: {message}"),
    }
}

/// A namespace of its own for one test, deleted when dropped.
pub struct TestNamespace {
    name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    /// Creates `<prefix>-<n>` and waits for its `default` ServiceAccount (pods need it).
    pub async fn create(cp: &ControlPlane, prefix: &str) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let name = format!(
            "{}-{}",
            prefix.trim_matches('-'),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let client = cp.client().await?;
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        let namespace = Self {
            name,
            kubectl: cp.kubectl_path(),
            kubeconfig: cp.kubeconfig(),
        };

        let accounts: Api<ServiceAccount> = Api::namespaced(client, &namespace.name);
        let started = Instant::now();
        while accounts.get_opt("default").await?.is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                return Err(crate::Error::Timeout {
                    what: format!("ServiceAccount default in namespace {}", namespace.name),
                    seconds: 60,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(namespace)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Best effort and quick: the namespace controller finishes the deletion.
        let _ = std::process::Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// kube's client logs every failed request at ERROR, such as each /readyz poll while
/// the API server starts; callers get and report those errors themselves.
pub const DEFAULT_LOG_FILTER: &str = "info,kube_client::client::builder=off";

/// Logs of tests go to the test's captured output; `RUST_LOG` filters (default [`DEFAULT_LOG_FILTER`]).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_test_writer()
        .try_init();
}

/// The repository root: `$FERROVIRT_ROOT`, else the parent of this crate.
pub fn repo_root() -> PathBuf {
    match std::env::var_os("FERROVIRT_ROOT").filter(|r| !r.is_empty()) {
        Some(root) => PathBuf::from(root),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate is inside the repository")
            .to_path_buf(),
    }
}

/// KubeVirt's example manifests: `$FERROVIRT_ROOT/../shared/kubevirt-examples`.
pub fn examples_dir() -> PathBuf {
    repo_root()
        .join("..")
        .join("shared")
        .join("kubevirt-examples")
}

/// The manifests of the compatibility suite (`*.yaml`, `*.yml` in [`examples_dir`]),
/// sorted. Panics naming the folder when it cannot be read or holds none.
pub fn example_files() -> Vec<PathBuf> {
    let dir = examples_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "reading the KubeVirt examples in {}: {e} (the compatibility suite lives next to the repo)",
                dir.display()
            )
        })
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    files
}

/// `$TMPDIR/ferrovirt-tests/cp-<pid>-<n>`, after removing those of processes that are gone.
fn fresh_temp_dir() -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir().join("ferrovirt-tests");
    std::fs::create_dir_all(&base)?;
    for entry in std::fs::read_dir(&base)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("cp-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !process::alive(pid)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    for n in 0.. {
        let dir = base.join(format!("cp-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!()
}

/// `error: cause: cause`, printed once.
pub(crate) use ferrovirt_runtime::chain as error_chain;
