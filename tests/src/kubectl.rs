use std::ffi::OsStr;
use std::fmt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::Result;
use crate::error::IoContext;

const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);

/// What a `kubectl` run printed, and how it exited.
#[derive(Debug)]
pub struct KubectlOutput {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with the whole output unless kubectl succeeded; returns stdout.
    #[track_caller]
    pub fn expect_success(&self) -> &str {
        assert!(self.success(), "{self}");
        &self.stdout
    }
}

impl fmt::Display for KubectlOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "kubectl {} exited with {}",
            self.args.join(" "),
            self.status
        )?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

pub(crate) async fn run<I, S>(
    kubectl: &Path,
    kubeconfig: &Path,
    cache_dir: &Path,
    args: I,
    stdin: Option<&str>,
) -> Result<KubectlOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let mut cmd = tokio::process::Command::new(kubectl);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        // Its own discovery cache: ports are reused between clusters with other CRDs.
        .arg("--cache-dir")
        .arg(cache_dir)
        .args(&args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .context(|| format!("running {}", kubectl.display()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .context(|| "writing kubectl's stdin".to_string())?;
    }
    let output = tokio::time::timeout(KUBECTL_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| crate::Error::Timeout {
            what: format!("kubectl {}", args.join(" ")),
            seconds: KUBECTL_TIMEOUT.as_secs(),
        })?
        .context(|| "waiting for kubectl".to_string())?;
    Ok(KubectlOutput {
        args,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
