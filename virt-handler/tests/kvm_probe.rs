//! The KVM probe through the real binary: it always answers within its timeout, and a
//! device that is not KVM counts as unusable.

use std::path::Path;
use std::time::{Duration, Instant};

use virt_handler::kvm::{KvmStatus, probe};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_virt-handler"))
}

#[test]
fn probe_answers_within_its_timeout() {
    let started = Instant::now();
    let status = probe(exe(), Path::new("/dev/kvm"), Duration::from_secs(2));
    let elapsed = started.elapsed();
    eprintln!("MEASURE KVM probe on this machine: {status:?} in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "probe took {elapsed:?}");
}

#[test]
fn a_missing_or_wrong_device_is_unusable() {
    let missing = probe(exe(), Path::new("/nonexistent/kvm"), Duration::from_secs(2));
    assert!(
        matches!(&missing, KvmStatus::Unusable(m) if m.contains("does not exist")),
        "{missing:?}"
    );
    let null = probe(exe(), Path::new("/dev/null"), Duration::from_secs(2));
    assert!(
        matches!(&null, KvmStatus::Unusable(m) if m.contains("KVM_GET_API_VERSION")),
        "{null:?}"
    );
}
