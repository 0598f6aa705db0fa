//! Ferrovirt's test harness: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler) on free loopback ports, with Ferrovirt's CRDs
//! and admission policies (`deploy/policies/`) installed.
//!
//! Integration tests use [`shared`] (one control plane per test binary, started on first
//! use and stopped when the binary exits, even when it is killed) and a [`TestNamespace`]
//! each. `ferrovirt-local` (run by `hack/local-up.sh`) starts the same control plane in
//! `.ferrovirt/` with its processes detached.

pub mod aggregation;
mod assets;
pub mod cdi;
mod components;
pub mod console;
mod control_plane;
mod error;
pub mod guest;
pub mod helm;
mod kubectl;
pub mod manifests;
pub mod node;
mod pki;
mod policies;
mod process;
mod shared;
mod stack;
pub mod wait;
pub mod webhooks;

pub use assets::{Assets, cache_dir};
pub use control_plane::{ControlPlane, Preinstall, Supervision, client_from, install_api, tail};
pub use error::{Error, Result};
pub use kubectl::KubectlOutput;
pub use pki::{Pki, Usage};
pub use policies::{POLICY_FILES, UNIMPLEMENTED_ANNOTATION, install_admission_policies};
pub use process::{Process, alive as pid_alive, has_exited, kill_tied, spawn_detached, spawn_tied};
pub use shared::{
    DEFAULT_LOG_FILTER, TestNamespace, example_files, examples_dir, init_tracing, repo_root,
    shared, shared_bare,
};
pub use stack::{
    SYSTEM_NAMESPACE, Stack, devnode_command, image_store, qemu_of, virt_controller_command,
    virt_handler_command, warm_capabilities, workspace_bin,
};
