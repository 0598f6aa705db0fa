//! The operator's one error type. A variant's name is the Event reason and the `reason`
//! label of `ferrovirt_operator_reconcile_errors_total`.

use std::time::Duration;

/// What went wrong while reconciling, talking to the API server, or starting up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating a VMI for a VM failed.
    #[error("creating VirtualMachineInstance {0}")]
    FailedCreate(String, #[source] kube::Error),
    /// Deleting a VMI of a VM failed.
    #[error("deleting VirtualMachineInstance {0}")]
    FailedDelete(String, #[source] kube::Error),
    /// Creating a VM of a pool failed.
    #[error("creating VirtualMachine {0}")]
    FailedCreateVirtualMachine(String, #[source] kube::Error),
    /// Deleting a VM of a pool failed.
    #[error("deleting VirtualMachine {0}")]
    FailedDeleteVirtualMachine(String, #[source] kube::Error),
    /// Creating a launcher pod failed (KubeVirt's reason: FailedCreate, as for a VMI).
    #[error("creating launcher pod for {0}")]
    FailedCreatePod(String, #[source] kube::Error),
    /// Deleting a launcher pod failed.
    #[error("deleting launcher pod {0}")]
    FailedDeletePod(String, #[source] kube::Error),
    /// Writing a status or metadata patch failed.
    #[error("patching {0}")]
    FailedPatch(String, #[source] kube::Error),
    /// Someone else wrote the object since it was read; the next reconcile rereads it.
    #[error("{0} changed while reconciling")]
    Conflict(String),
    /// The object is not usable (no namespace, name or UID).
    #[error("{0}")]
    InvalidObject(String),
    /// The VMI spec cannot be rendered as a launcher pod.
    #[error("rendering the launcher pod: {0}")]
    InvalidSpec(String),
    /// Talking to the API server failed outside of the cases above.
    #[error("kubernetes API")]
    Kube(#[from] kube::Error),
    /// Leader election failed or the lease was lost.
    #[error("leader election: {0}")]
    LeaderElection(String),
    /// The lease was lost: the controllers stop, so this replica never acts next to a new
    /// leader, and it campaigns again.
    #[error("lost the leader lease {0} after {1:?} without renewal")]
    LostLease(String, Duration),
    /// Starting up: the kubeconfig, the client, the metrics endpoint.
    #[error("starting")]
    Runtime(#[source] ferrovirt_runtime::Error),
    /// A watch stream ended with an error.
    #[error("watch")]
    Watch(#[source] kube::runtime::watcher::Error),
    /// The VM's instancetype (or its ControllerRevision) cannot be found.
    #[error("{0}")]
    FailedFindInstancetype(String),
    /// The VM's preference (or its ControllerRevision) cannot be found.
    #[error("{0}")]
    FailedFindPreference(String),
    /// The VM's template sets what its instancetype sets.
    #[error(transparent)]
    InstancetypeConflict(crds::expand::Conflicts),
    /// The VM provides less than its preference requires.
    #[error(transparent)]
    PreferenceRequirements(crds::expand::Unmet),
    /// Storing the ControllerRevision of an instancetype or preference failed.
    #[error("creating ControllerRevision {0}: {1}")]
    FailedCreateRevision(String, String),
    /// Creating a VM's DataVolume failed (KubeVirt's reason).
    #[error("creating DataVolume {0}")]
    FailedDataVolumeCreate(String, #[source] kube::Error),
    /// A VM uses DataVolumes and the cluster serves none: CDI is not installed.
    #[error("{0}")]
    NoDataVolumeApi(String),
    /// Serializing a patch failed (a bug).
    #[error("serializing a patch")]
    Serialize(#[from] serde_json::Error),
}

/// Results of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The Event reason and the metric label: the variant's name, or KubeVirt's reason
    /// where KubeVirt has one for the same failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::FailedCreate(..) => "FailedCreate",
            Error::FailedDelete(..) => "FailedDelete",
            Error::FailedCreatePod(..) | Error::FailedCreateVirtualMachine(..) => "FailedCreate",
            Error::FailedDeleteVirtualMachine(..) => "FailedDelete",
            Error::FailedDeletePod(..) => "FailedDeletePod",
            Error::FailedPatch(..) => "FailedPatch",
            Error::Conflict(..) => "Conflict",
            Error::InvalidObject(..) => "InvalidObject",
            Error::InvalidSpec(..) => "InvalidSpec",
            Error::Kube(..) => "Kube",
            Error::LeaderElection(..) => "LeaderElection",
            Error::LostLease(..) => "LostLease",
            Error::Runtime(..) => "Startup",
            Error::Watch(..) => "Watch",
            Error::Serialize(..) => "Serialize",
            Error::FailedFindInstancetype(..) => "FailedFindInstancetype",
            Error::FailedFindPreference(..) => "FailedFindPreference",
            Error::InstancetypeConflict(..)
            | Error::PreferenceRequirements(..)
            | Error::FailedCreateRevision(..) => "FailedCreate",
            Error::FailedDataVolumeCreate(..) | Error::NoDataVolumeApi(..) => {
                "FailedDataVolumeCreate"
            }
        }
    }

    /// Conflicts are ordinary under concurrency: retried quickly, no Warning event.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict(_))
    }
}

/// What the API server said (its Status message), else the error itself: for conditions
/// and Events, which should carry the API's words without Rust's wrapping.
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        e => ferrovirt_runtime::chain(e),
    }
}

/// Whether an API error is a 409 Conflict (stale resourceVersion).
pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    status_code(e) == Some(409)
}

/// Whether an API error is a 404 Not Found.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    status_code(e) == Some(404)
}

/// Whether an API error is AlreadyExists (409 on create).
pub(crate) fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.reason == "AlreadyExists")
}

/// Whether a JSON patch `test` operation failed (422 Invalid).
pub(crate) fn is_test_failed(e: &kube::Error) -> bool {
    status_code(e) == Some(422)
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
