//! Used by tests/tests/harness.rs to check that the control plane never outlives the test
//! process: starts the shared control plane from a short-lived thread, checks that the
//! processes survive that thread, prints their pids and then either panics (`panic`) or
//! waits to be killed (`wait`).

use std::io::Write;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    assert!(
        mode == "panic" || mode == "wait",
        "usage: harness-probe panic|wait"
    );

    // Test threads come and go: start the control plane from one that ends right away.
    let (pids, dir) = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let cp = ferrovirt_tests::shared().await;
            let pids: Vec<u32> = cp.processes().iter().map(|p| p.pid).collect();
            (pids, cp.dir().to_path_buf())
        })
    })
    .join()
    .expect("starting the control plane");

    std::thread::sleep(std::time::Duration::from_secs(1));
    for pid in &pids {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} died when the thread that started the control plane ended"
        );
    }
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("PIDS {}", pids.join(" "));
    println!("DIR {}", dir.display());
    println!("READY");
    std::io::stdout().flush().unwrap();

    if mode == "panic" {
        panic!("harness-probe panics on purpose");
    }
    loop {
        std::thread::park();
    }
}
