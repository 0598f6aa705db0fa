//! The node contract (docs/contracts.md) as code: what the operator (virt-controller),
//! virt-handler, virt-launcher and devnode share about a node, so that each fact exists
//! once and changing it is a compile error in every component that depends on it.
//!
//! - [`protocol`] and [`client`]: the launcher's command socket (JSON lines over a unix
//!   socket, lines bounded by [`frame`]). No libvirt here: virt-handler talks to launchers without linking it.
//! - [`agent`]: the QEMU guest agent's state and answers, in KubeVirt's API shapes.
//! - [`downward_metrics`]: KubeVirt's downward metrics (vhostmd's disk and XML).
//! - [`paths`]: the node run dir and the per-VMI directory's files.
//! - [`handler_api`]: how virt-api reaches a node's virt-handler (address annotation,
//!   certificate names, paths).
//! - [`imagestore`]: how an image reference names a directory of a host's image store.
//! - [`pod`]: the launcher pod's labels and annotations, the default grace period, the
//!   KVM resource, and the field managers of the components' writes.

pub mod agent;
pub mod client;
pub mod downward_metrics;
mod error;
pub mod frame;
pub mod handler_api;
pub mod imagestore;
pub mod paths;
pub mod pod;
pub mod protocol;

pub use error::{Error, Result};
