//! virt-handler: Ferrovirt's node agent. Probes KVM and labels its Node, converts VMI
//! specs into libvirt domains, prepares volumes, has each VMI's launcher run its domain,
//! and writes VMI status from Scheduled on.
//!
//! Layers: pure types and functions ([`config`], [`domain`], [`volumes::plan`],
//! [`status`]), node-side work ([`kvm`], [`volumes::prepare`], [`vmi_dir`]), and the
//! Kubernetes wiring ([`controller`], [`node`]), and the HTTPS API virt-api uses for
//! console, VNC, pause and unpause ([`server`]).

pub mod agent;
pub mod args;
pub mod backend_storage;
pub mod config;
pub mod console;
pub mod context;
pub mod controller;
pub mod domain;
pub mod downward_metrics;
mod error;
pub mod firmware;
pub mod kvm;
pub mod metrics;
pub mod network;
pub mod node;
pub mod realtime;
pub mod resets;
pub mod server;
pub mod status;
pub mod vmi_dir;
pub mod volumes;
pub mod watch;
mod worker;

pub use error::{Error, Result, chain};
