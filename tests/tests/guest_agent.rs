//! The QEMU guest agent end to end (docs/guest-agent.md), in one boot of the test guest
//! (kernel boot with a cloud-init disk) on the devnode Stack: the guest's qemu-ga connects
//! through the domain's channel, virt-handler writes `status.guestOSInfo` (checked against
//! `uname -r` and `/etc/os-release` read on the console) and the `AgentConnected`
//! condition; KubeVirt's virtctl `guestosinfo`, `userlist` and `fslist` answer through
//! virt-api, virt-handler and the launcher; killing qemu-ga in the guest removes the
//! condition and virt-api then refuses as KubeVirt does.

use std::time::{Duration, Instant};

use ferrovirt_node_contract::paths::SERIAL_LOG;
use ferrovirt_tests::aggregation::{apply_in, start_virt_api, virtctl, virtctl_path, vmi_field};
use ferrovirt_tests::console::Client;
use ferrovirt_tests::guest::READY_LINE;
use ferrovirt_tests::manifests::kernel_boot_vm;
use ferrovirt_tests::wait::eventually_or;
use ferrovirt_tests::{ControlPlane, Stack, TestNamespace, shared};
use serde_json::Value;

const VM: &str = "agentvm";
const BOOT: Duration = Duration::from_secs(240);
/// The agent starts right after the guest's ready line; a status write or a client on 2
/// loaded cores.
const STEP: Duration = Duration::from_secs(60);

/// Waits until `check` holds (the harness's `eventually_or`), failing with the stack's logs.
async fn wait_until<F, Fut>(stack: &Stack, what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_or(
        what,
        timeout,
        || {
            let holds = check();
            async move { holds.await.then_some(()) }
        },
        || stack.log_tails(30),
    )
    .await
}

async fn vmi(cp: &ControlPlane, ns: &str) -> Value {
    vmi_opt(cp, ns)
        .await
        .unwrap_or_else(|| panic!("VMI {VM} in {ns} is gone"))
}

/// The VMI, or None before the VM controller has created it.
async fn vmi_opt(cp: &ControlPlane, ns: &str) -> Option<Value> {
    let out = cp
        .kubectl([
            "get",
            "vmi",
            VM,
            "-n",
            ns,
            "-o",
            "json",
            "--ignore-not-found",
        ])
        .await
        .expect("kubectl runs");
    let json = out.expect_success();
    (!json.trim().is_empty()).then(|| serde_json::from_str(json).expect("kubectl prints JSON"))
}

fn agent_condition(vmi: &Value) -> Option<Value> {
    vmi["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "AgentConnected")
        .cloned()
}

/// `virtctl <args> agentvm`, which must succeed and print JSON.
async fn virtctl_json(cp: &ControlPlane, ns: &str, sub: &str) -> Value {
    let out = virtctl(&cp.kubeconfig(), &["-n", ns, sub, VM])
        .await
        .expect("virtctl runs");
    serde_json::from_str(out.expect_success())
        .unwrap_or_else(|e| panic!("virtctl {sub} printed no JSON ({e}): {out}"))
}

/// Types `command` on the console and returns the value printed after `marker=`.
async fn console_value(console: &mut Client, marker: &str, command: &str) -> String {
    console
        .send(format!("echo {marker}=$({command})\n").as_bytes())
        .unwrap();
    let started = Instant::now();
    loop {
        let out = console.stdout();
        // The echoed command line holds `marker=$(`, the answer `marker=<value>`.
        if let Some(v) = out
            .split(&format!("{marker}="))
            .skip(1)
            .map(|rest| rest.lines().next().unwrap_or_default().trim().to_string())
            .find(|v| !v.starts_with("$(") && !v.is_empty())
        {
            return v;
        }
        assert!(
            started.elapsed() < STEP,
            "no {marker}= answer on the console:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_agent_reports_os_users_filesystems_and_disconnects() {
    let cp = shared().await;
    let _virt_api = start_virt_api(cp)
        .await
        .unwrap_or_else(|e| panic!("starting virt-api: {e}"));
    let stack = Stack::start(cp, "agent-node")
        .await
        .unwrap_or_else(|e| panic!("starting Ferrovirt: {e}"));
    let ns = TestNamespace::create(cp, "agent").await.unwrap();
    let ns = ns.name();
    // A cloud-init disk: the guest mounts it at /run/cidata, so fslist has a filesystem.
    apply_in(
        cp,
        ns,
        &kernel_boot_vm(VM, "Always", Some("#cloud-config\npassword: agent")),
    )
    .await;

    wait_until(&stack, "VMI Running", BOOT, || async {
        vmi_opt(cp, ns)
            .await
            .is_some_and(|v| v["status"]["phase"] == "Running")
    })
    .await;
    let uid = vmi_field(cp, ns, VM, ".metadata.uid").await;
    let log = stack.vmi_dir(&uid).join(SERIAL_LOG);
    wait_until(&stack, "the guest's ready line", BOOT, || async {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains(READY_LINE))
    })
    .await;

    // 1. AgentConnected and guestOSInfo in status.
    wait_until(&stack, "AgentConnected and guestOSInfo", STEP, || async {
        let v = vmi(cp, ns).await;
        agent_condition(&v).is_some_and(|c| c["status"] == "True")
            && v["status"]["guestOSInfo"]["kernelRelease"].is_string()
    })
    .await;
    let status = vmi(cp, ns).await["status"].clone();
    let os = &status["guestOSInfo"];
    let condition = agent_condition(&vmi(cp, ns).await).unwrap();
    assert!(
        condition["reason"].is_null() && condition["lastTransitionTime"].is_string(),
        "KubeVirt's condition has no reason: {condition}"
    );

    // 2. The same facts, read in the guest on its console.
    let mut console = Client::spawn(
        &virtctl_path(),
        &cp.kubeconfig(),
        &["-n", ns, "console", VM],
    )
    .unwrap();
    console.send(b"\n").unwrap();
    let release = console_value(&mut console, "KREL", "uname -r").await;
    assert_eq!(os["kernelRelease"], release.as_str(), "{os}");
    let machine = console_value(&mut console, "MACH", "uname -m").await;
    assert_eq!(os["machine"], machine.as_str(), "{os}");
    let id = console_value(&mut console, "OSID", ". /etc/os-release; echo $ID").await;
    assert_eq!(os["id"], id.as_str(), "{os}");
    let pretty = console_value(
        &mut console,
        "PRETTY",
        ". /etc/os-release; echo $PRETTY_NAME",
    )
    .await;
    assert_eq!(os["prettyName"], pretty.as_str(), "{os}");
    let hostname = console_value(&mut console, "HOST", "hostname").await;
    assert_eq!(hostname, VM, "cloud-init's local-hostname");

    // 3. KubeVirt's virtctl through virt-api and virt-handler.
    let info = virtctl_json(cp, ns, "guestosinfo").await;
    assert_eq!(info["os"]["kernelRelease"], release.as_str(), "{info}");
    assert_eq!(info["hostname"], VM, "{info}");
    assert!(
        info["guestAgentVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("7.")),
        "Debian 12's qemu-ga: {info}"
    );
    assert!(
        info["supportedCommands"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["name"] == "guest-get-osinfo")),
        "{info}"
    );
    assert_eq!(info["timezone"], "UTC, 0", "{info}");
    let users = virtctl_json(cp, ns, "userlist").await;
    let items = users["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{users}"));
    assert!(
        items
            .iter()
            .any(|u| u["userName"] == "root" && u["loginTime"].as_f64().is_some_and(|t| t > 0.0)),
        "the console's login of root: {users}"
    );
    let fs = virtctl_json(cp, ns, "fslist").await;
    let items = fs["items"].as_array().unwrap_or_else(|| panic!("{fs}"));
    let cidata = items
        .iter()
        .find(|f| f["mountPoint"] == "/run/cidata")
        .unwrap_or_else(|| panic!("the cloud-init disk mounted at /run/cidata: {fs}"));
    assert!(
        cidata["totalBytes"].as_u64().is_some_and(|b| b > 0)
            && cidata["diskName"].as_str().is_some_and(|d| !d.is_empty()),
        "{cidata}"
    );
    let fs_type = console_value(
        &mut console,
        "FSTYPE",
        "awk '$2==\"/run/cidata\"{print $3}' /proc/mounts",
    )
    .await;
    assert_eq!(cidata["fileSystemType"], fs_type.as_str(), "{cidata}");

    // 4. The agent goes away: the condition is removed, the OS info stays, and virt-api
    //    refuses the agent's subresources as KubeVirt does.
    console.send(b"killall qemu-ga\n").unwrap();
    wait_until(&stack, "AgentConnected removed", STEP, || async {
        agent_condition(&vmi(cp, ns).await).is_none()
    })
    .await;
    let after = vmi(cp, ns).await;
    assert_eq!(after["status"]["phase"], "Running");
    assert_eq!(
        after["status"]["guestOSInfo"], *os,
        "the last OS info stays"
    );
    let out = virtctl(&cp.kubeconfig(), &["-n", ns, "guestosinfo", VM])
        .await
        .expect("virtctl runs");
    assert!(
        !out.success() && out.stderr.contains("the server reported a conflict"),
        "{out}"
    );
    // virtctl reads this answer raw and shows client-go's words; the Status says why.
    let path = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{VM}/userlist"
    );
    let out = cp
        .kubectl(["get", "--raw", &path])
        .await
        .expect("kubectl runs");
    assert!(
        !out.success()
            && out
                .stderr
                .contains("VMI does not have guest agent connected"),
        "{out}"
    );
}
