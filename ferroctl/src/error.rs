//! ferroctl's errors, each printed as one line.

/// What a ferroctl command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("no kubeconfig (KUBECONFIG, ~/.kube/config) and not in a cluster")]
    NoConfig(#[source] kube::config::InClusterError),
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
    /// The API server or virt-api refused: `message` is theirs.
    #[error("{}", refusal(*code, message))]
    Refused { code: u16, message: String },
    #[error("talking to the API server")]
    Transport(#[source] kube::Error),
    /// The command cannot be carried out as given.
    #[error("{0}")]
    Usage(String),
    /// A console or VNC stream failed after it was opened.
    #[error("{0}")]
    Stream(String),
    #[error("{action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => Error::Refused {
                code: s.code,
                message: s.message.trim_matches('"').to_string(),
            },
            other => Error::Transport(other),
        }
    }
}

/// One line per refusal, with a hint where the API server's own words do not say it.
fn refusal(code: u16, message: &str) -> String {
    match code {
        403 => format!("forbidden: {message}"),
        401 => format!("unauthorized: {message}"),
        404 if !message.contains("not found") => format!(
            "{message} (is virt-api installed? its APIService is v1.subresources.kubevirt.io)"
        ),
        503 => format!("{message} (virt-api is not reachable from the API server)"),
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_one_line() {
        let e = Error::Refused {
            code: 409,
            message: "Operation cannot be fulfilled on virtualmachine.kubevirt.io \"vm1\": VM is already running".into(),
        };
        assert!(e.to_string().ends_with("VM is already running"));
        let e = Error::Refused {
            code: 403,
            message: "nope".into(),
        };
        assert_eq!(e.to_string(), "forbidden: nope");
        let e = Error::Refused {
            code: 404,
            message: "the server could not find the requested resource".into(),
        };
        assert!(e.to_string().contains("is virt-api installed?"));
        assert!(!e.to_string().contains('\n'));
    }
}
