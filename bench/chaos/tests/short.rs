//! The chaos soak's short seeded version, run by CI: nine cycles on four VMs, every
//! violation a failure. Seed 1739 makes the nine cycles hit the nine targets once each
//! (leader, standby, devnode, kube-apiserver, guest poweroff, etcd, virt-handler, QEMU,
//! launcher). The long run is `bench/chaos.sh` (50 cycles, 10 VMs).

use std::time::Duration;

use ferrovirt_chaos::{Options, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_seeded_soak_loses_nothing() {
    ferrovirt_tests::init_tracing();
    let opts = Options {
        seed: 1739,
        cycles: 9,
        vms: 4,
        settle_timeout: Duration::from_secs(180),
        time_limit: Duration::from_secs(20 * 60),
        ..Options::default()
    };
    let report = run(&opts).await.expect("the soak runs");
    eprintln!("{report}");
    assert_eq!(report.cycles(), 9, "the soak stopped early:\n{report}");
    assert_eq!(
        report.faults().len(),
        ferrovirt_chaos::Target::ALL.len(),
        "the seed no longer hits every target once:\n{report}"
    );
    assert_eq!(report.total_violations(), 0, "{report}");
}
