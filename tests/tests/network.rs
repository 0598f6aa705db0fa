//! Pod networking against the real kube-apiserver: `ferroctl expose` makes the Service
//! KubeVirt's `virtctl expose` makes (same selector, ports, owner), and that selector
//! matches the launcher pod the operator renders. (The guest side, DHCP and NAT in a
//! pod's network namespace, is virt-handler/tests/network.rs; docs/networking.md.)

use std::time::{Duration, Instant};

use ferrovirt_tests::aggregation::{StopOnDrop, apply_in, ferroctl, start_operator, virtctl};
use ferrovirt_tests::{ControlPlane, SYSTEM_NAMESPACE, TestNamespace, shared};
use serde_json::Value;

fn vm(name: &str) -> String {
    format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: Always
  template:
    spec:
      domain:
        memory:
          guest: 64Mi
        devices:
          interfaces:
          - name: default
            masquerade: {{}}
            ports:
            - port: 80
            - name: dns
              port: 53
              protocol: UDP
      networks:
      - name: default
        pod: {{}}
"#
    )
}

async fn json(cp: &ControlPlane, args: &[&str]) -> Value {
    let out = cp.kubectl(args).await.expect("kubectl runs");
    serde_json::from_str(out.expect_success()).expect("kubectl prints JSON")
}

#[tokio::test]
async fn expose_makes_virtctls_service_and_it_selects_the_launcher_pod() {
    let cp = shared().await;
    let ns = TestNamespace::create(cp, "expose").await.unwrap();
    let ns = ns.name();
    apply_in(cp, ns, &vm("web")).await;
    // The operator's leader election lease lives in the system namespace.
    cp.kubectl_with_stdin(
        ["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {SYSTEM_NAMESPACE}\n"
        )),
    )
    .await
    .expect("kubectl runs")
    .expect_success();
    let _operator = StopOnDrop(start_operator(cp).unwrap());
    let kubeconfig = cp.kubeconfig();

    let out = ferroctl(
        &kubeconfig,
        &[
            "-n",
            ns,
            "expose",
            "vm",
            "web",
            "--name",
            "web-np",
            "--port",
            "8000",
            "--target-port",
            "80",
            "--type",
            "NodePort",
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        out.expect_success().trim(),
        "Service web-np successfully exposed for vm web"
    );
    let svc = json(cp, &["get", "svc", "web-np", "-n", ns, "-o", "json"]).await;
    assert_eq!(svc["spec"]["type"], "NodePort", "{svc}");
    assert_eq!(
        svc["spec"]["selector"],
        serde_json::json!({"vmi.kubevirt.io/id": "web"})
    );
    let port = &svc["spec"]["ports"][0];
    assert_eq!(
        (port["port"].as_i64(), port["targetPort"].as_i64()),
        (Some(8000), Some(80)),
        "{svc}"
    );
    assert!(
        port["nodePort"].as_i64().is_some(),
        "the API server allocates a node port: {svc}"
    );
    let vm_uid =
        json(cp, &["get", "vm", "web", "-n", ns, "-o", "json"]).await["metadata"]["uid"].clone();
    let owner = &svc["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), &owner["uid"]),
        (Some("VirtualMachine"), &vm_uid),
        "{svc}"
    );

    // Without --port: the pod-network interface's ports, as virtctl names them.
    ferroctl(
        &kubeconfig,
        &["-n", ns, "expose", "vm", "web", "--name", "web-ports"],
    )
    .await
    .unwrap()
    .expect_success();
    let svc = json(cp, &["get", "svc", "web-ports", "-n", ns, "-o", "json"]).await;
    let ports: Vec<(String, i64, String)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["port"].as_i64().unwrap_or_default(),
                p["protocol"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("port-1".into(), 80, "TCP".into()),
            ("port-2".into(), 53, "UDP".into())
        ]
    );
    assert_eq!(svc["spec"]["type"], "ClusterIP");

    // KubeVirt's virtctl makes the same selector.
    virtctl(
        &kubeconfig,
        &[
            "-n",
            ns,
            "expose",
            "vm",
            "web",
            "--name",
            "web-virtctl",
            "--port",
            "8000",
        ],
    )
    .await
    .unwrap()
    .expect_success();
    let theirs = json(cp, &["get", "svc", "web-virtctl", "-n", ns, "-o", "json"]).await;
    assert_eq!(
        theirs["spec"]["selector"],
        serde_json::json!({"vmi.kubevirt.io/id": "web"})
    );

    // The selector finds the launcher pod the operator made for the VM's VMI.
    let start = Instant::now();
    let pods = loop {
        let list = json(
            cp,
            &[
                "get",
                "pods",
                "-n",
                ns,
                "-l",
                "vmi.kubevirt.io/id=web",
                "-o",
                "json",
            ],
        )
        .await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        if !items.is_empty() {
            break items;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no pod carries vmi.kubevirt.io/id=web: {}\nVMIs: {}\nvirt-controller:\n{}",
            json(cp, &["get", "pods", "-n", ns, "-o", "json"]).await,
            json(cp, &["get", "vmi", "-n", ns, "-o", "json"]).await,
            ferrovirt_tests::tail(&cp.log("virt-controller"), 30)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(pods.len(), 1);
    assert_eq!(
        pods[0]["metadata"]["labels"]["kubevirt.io"], "virt-launcher",
        "{}",
        pods[0]
    );

    // Refusals name what is missing.
    apply_in(cp, ns, &vm("bare").replace("            ports:\n            - port: 80\n            - name: dns\n              port: 53\n              protocol: UDP\n", "")).await;
    let out = ferroctl(
        &kubeconfig,
        &["-n", ns, "expose", "vm", "bare", "--name", "x"],
    )
    .await
    .unwrap();
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr
            .contains("couldn't find port via --port flag or introspection"),
        "{out}"
    );
    let out = ferroctl(
        &kubeconfig,
        &[
            "-n", ns, "expose", "vm", "nope", "--name", "x", "--port", "1",
        ],
    )
    .await
    .unwrap();
    assert!(!out.success() && out.stderr.contains("not found"), "{out}");
}
