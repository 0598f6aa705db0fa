//! Defect 8 of issue 14: virt-handler after an API server outage. A test binary of its
//! own: restarting the API server disturbs every test sharing its control plane.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Fixture, create_scheduled_with, guest_spec, wait_phase};
use common::start_launcher;
use crds::VmiPhase;
use ferrovirt_tests::shared;
use kube::ResourceExt;
use kube::api::DeleteParams;
use serde_json::json;

/// How long the API server stays down: long enough that a watcher backing off without a
/// ceiling would sleep for half a minute when it comes back.
const DOWNTIME: Duration = Duration::from_secs(20);
/// When the VMI is deleted after the API server is back (the reported case: 10 s).
const DELETE_AFTER: Duration = Duration::from_secs(10);
/// The handler stops the guest well within this after the delete; the defect took 36 s
/// (and 0.1 s without an outage).
const DEADLINE: Duration = Duration::from_secs(15);

/// The handler sees a VMI deleted shortly after an API server restart and stops its guest,
/// instead of staying blind while its watch backs off.
#[tokio::test]
async fn a_vmi_deleted_after_an_api_server_restart_is_stopped() {
    let cp = shared().await;
    let f = Fixture::start(cp, "og").await;
    let (api, handler, run_dir) = (&f.api, &f.handler, &f.run_dir);
    let mut spec = guest_spec();
    spec["terminationGracePeriodSeconds"] = json!(1);
    let vmi = create_scheduled_with(api, "g", &f.node, spec).await;
    let uid = vmi.uid().unwrap();
    let mut launcher = start_launcher(&run_dir.path().join("vmis").join(&uid), "g", &uid, 1);
    wait_phase(api, "g", VmiPhase::Running, handler).await;

    cp.restart_apiserver(DOWNTIME).await.unwrap();
    tokio::time::sleep(DELETE_AFTER).await;
    api.delete("g", &DeleteParams::default()).await.unwrap();
    let deleted = Instant::now();
    loop {
        if let Some(status) = launcher.0.try_wait().unwrap() {
            eprintln!(
                "MEASURE delete after the API server restart -> launcher exit: {:.1}s ({status})",
                deleted.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            deleted.elapsed() < DEADLINE,
            "the handler did not stop the deleted VMI's guest within {DEADLINE:?} of the delete \
             ({DOWNTIME:?} API server outage, delete {DELETE_AFTER:?} after it came back)\n\
             handler log:\n{}",
            handler.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
