//! Reaching a running VM: serial console, VNC, pause and unpause through kube-apiserver,
//! virt-api and the VM's virt-handler (mutual TLS), with KubeVirt's own virtctl v1.7.0
//! and with ferroctl, on the real node side (devnode, virt-controller, virt-handler,
//! virt-launcher, QEMU under emulation). One VM is booted once for the whole binary; the
//! tests take turns (one console per VMI: each new console ends the one before it).
//! virt-api pings consoles every 500 ms here, so a proxy that drops connections idle for
//! 2 s keeps a quiet console.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ferrovirt_node_contract::handler_api::{ADDRESS_ANNOTATION, SERVER_CERTS_SECRET, SERVER_NAME};
use ferrovirt_node_contract::paths::SERIAL_LOG;
use ferrovirt_tests::aggregation::{
    VirtApi, apply_in, role_binding, start_virt_api_with, user_kubeconfig, virtctl_path,
};
use ferrovirt_tests::console::{Client, idle_dropping_proxy};
use ferrovirt_tests::guest::READY_LINE;
use ferrovirt_tests::manifests::kernel_boot_vm;
use ferrovirt_tests::{
    ControlPlane, SYSTEM_NAMESPACE, Stack, TestNamespace, shared, workspace_bin,
};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Api;
use tokio::sync::{Mutex, OnceCell};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// Enough for a client to connect or a status to be written on 2 loaded cores.
const STEP: Duration = Duration::from_secs(60);
const VM: &str = "demo";

struct Fixture {
    cp: &'static ControlPlane,
    stack: Stack,
    _virt_api: VirtApi,
    ns: TestNamespace,
    /// `virtctl console` started before the guest booted: it saw the ready line.
    boot_console: std::sync::Mutex<Option<Client>>,
}

static FIXTURE: OnceCell<Fixture> = OnceCell::const_new();
/// One test at a time: consoles replace each other and a paused guest answers nothing.
static TURN: Mutex<()> = Mutex::const_new(());

async fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    let out = cp.kubectl(args.to_vec()).await.expect("kubectl runs");
    out.expect_success().to_string()
}

async fn vmi_field(f: &Fixture, path: &str) -> String {
    let out =
        f.cp.kubectl([
            "get",
            "vmi",
            VM,
            "-n",
            f.ns.name(),
            "-o",
            &format!("jsonpath={{{path}}}"),
        ])
        .await
        .expect("kubectl runs");
    if out.success() {
        out.stdout
    } else {
        String::new()
    }
}

/// Waits until `check` holds; panics naming `what`, with the stack's logs.
async fn wait_until<F, Fut>(f: &Fixture, what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        if started.elapsed() > timeout {
            panic!(
                "{what}: not so after {} s\n{}",
                timeout.as_secs(),
                f.stack.log_tails(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The control plane, virt-api (pinging every 500 ms), the node side, and VM `demo`
/// booted with `virtctl console` attached from before the guest's first line.
async fn fixture() -> &'static Fixture {
    FIXTURE
        .get_or_init(|| async {
            let cp = shared().await;
            let flags = [
                "--console-ping-interval",
                "500ms",
                "--handler-cert-check-interval",
                "2s",
            ];
            let virt_api = start_virt_api_with(cp, &flags)
                .await
                .unwrap_or_else(|e| panic!("starting virt-api: {e}"));
            let stack = Stack::start(cp, "console-node")
                .await
                .unwrap_or_else(|e| panic!("starting Ferrovirt: {e}"));
            let ns = TestNamespace::create(cp, "console").await.unwrap();
            apply_in(cp, ns.name(), &kernel_boot_vm(VM, "Always", None)).await;
            let f = Fixture {
                cp,
                stack,
                _virt_api: virt_api,
                ns,
                boot_console: std::sync::Mutex::new(None),
            };
            // virtctl console retries while virt-api answers "VMI is not running" (400),
            // but a VMI that does not exist yet is a 404 it gives up on.
            wait_until(&f, "VMI demo created", STEP, || async {
                !vmi_field(&f, ".metadata.uid").await.is_empty()
            })
            .await;
            let console = Client::spawn(
                &virtctl_path(),
                &cp.kubeconfig(),
                &["-n", f.ns.name(), "console", VM],
            )
            .unwrap();
            *f.boot_console.lock().unwrap() = Some(console);
            wait_until(&f, "VMI demo Running", BOOT_TIMEOUT, || async {
                vmi_field(&f, ".status.phase").await == "Running"
            })
            .await;
            let uid = vmi_field(&f, ".metadata.uid").await;
            let log = f.stack.vmi_dir(&uid).join(SERIAL_LOG);
            wait_until(
                &f,
                "the guest's ready line in serial0.log",
                BOOT_TIMEOUT,
                || async { std::fs::read_to_string(&log).is_ok_and(|t| t.contains(READY_LINE)) },
            )
            .await;
            f
        })
        .await
}

fn ferroctl() -> std::path::PathBuf {
    workspace_bin("ferroctl")
}

/// `<client> console demo` with a pipe on stdin, as `kubeconfig`'s user.
fn console(program: &std::path::Path, kubeconfig: &std::path::Path, ns: &str) -> Client {
    Client::spawn(program, kubeconfig, &["-n", ns, "console", VM]).unwrap()
}

/// Types a shell command whose output differs from its echo (`$((6*n))`) and waits for it.
async fn echo_answered(c: &mut Client, n: u32) {
    c.send(format!("echo fv-$((6*{n}))\n").as_bytes()).unwrap();
    c.expect(&format!("fv-{}", 6 * n), false, STEP).await;
}

#[tokio::test]
async fn virtctl_console_sees_the_ready_line_and_an_echo_is_answered() {
    let f = fixture().await;
    let _turn = TURN.lock().await;
    // The console attached before the guest booted saw its ready line (later tests may
    // have replaced it since, which ends it).
    let boot = f
        .boot_console
        .lock()
        .unwrap()
        .take()
        .expect("the boot console is used once");
    boot.expect("Successfully connected to demo console", true, STEP)
        .await;
    boot.expect(READY_LINE, false, STEP).await;
    drop(boot);

    let mut c = console(&virtctl_path(), &f.cp.kubeconfig(), f.ns.name());
    echo_answered(&mut c, 7).await;
    // Ctrl+] leaves; virtctl exits 0.
    c.send(b"\x1d").unwrap();
    let status = c.exit(STEP).await.expect("virtctl console left on Ctrl+]");
    assert!(status.success(), "{status:?}\n{}", c.stderr());

    // Figures, not assertions: client start to the first byte from the guest (its shell
    // answers the newline sent at once).
    for program in [virtctl_path(), ferroctl()] {
        let mut c = console(&program, &f.cp.kubeconfig(), f.ns.name());
        c.send(b"\n").unwrap();
        c.expect(":/#", false, STEP).await;
        eprintln!(
            "{} console: start to first guest byte {} ms",
            program.file_name().unwrap().to_string_lossy(),
            c.first_byte_after().unwrap().as_millis()
        );
    }
}

#[tokio::test]
async fn ferroctl_and_kubectl_ferro_console_answer_a_piped_command() {
    let f = fixture().await;
    let _turn = TURN.lock().await;
    let mut c = console(&ferroctl(), &f.cp.kubeconfig(), f.ns.name());
    c.send(b"echo fv-$((6*8))\n").unwrap();
    c.close_stdin();
    let status = c
        .exit(STEP)
        .await
        .expect("ferroctl console ends after its input");
    assert!(status.success(), "{}", c.stderr());
    assert!(
        c.stdout().contains("fv-48"),
        "stdout:\n{}\nstderr:\n{}",
        c.stdout(),
        c.stderr()
    );

    // As a kubectl plugin: kubectl finds kubectl-ferro on the PATH.
    let bin_dir = workspace_bin("kubectl-ferro")
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = std::process::Command::new(f.cp.kubectl_path());
    cmd.args(["ferro", "console", VM, "-n", f.ns.name()])
        .env("PATH", path)
        .env("KUBECONFIG", f.cp.kubeconfig());
    let mut k = Client::start(cmd).unwrap();
    k.send(b"echo fv-$((6*4))\n").unwrap();
    k.close_stdin();
    let status = k
        .exit(STEP)
        .await
        .expect("kubectl ferro console ends after its input");
    assert!(
        status.success() && k.stdout().contains("fv-24"),
        "stdout:\n{}\nstderr:\n{}",
        k.stdout(),
        k.stderr()
    );
}

/// On a terminal (a pty from util-linux's `script`): raw mode, so a lone Ctrl+] reaches
/// ferroctl without a newline and it leaves with 0; the guest answers a line ended by the
/// Enter key (CR).
#[tokio::test]
async fn ferroctl_console_on_a_terminal_is_raw_and_leaves_on_ctrl_bracket() {
    let f = fixture().await;
    let _turn = TURN.lock().await;
    let line = format!(
        "{} --kubeconfig {} -n {} console {VM}",
        ferroctl().display(),
        f.cp.kubeconfig().display(),
        f.ns.name()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qfec", &line, "/dev/null"]);
    let mut t = Client::start(cmd).unwrap();
    t.expect("Successfully connected to demo console", false, STEP)
        .await;
    t.send(b"echo fv-$((6*16))\r").unwrap();
    t.expect("fv-96", false, STEP).await;
    t.send(b"\x1d").unwrap();
    let status = t.exit(STEP).await.expect("ferroctl left on Ctrl+]");
    assert!(status.success(), "{status:?}\n{}", t.stdout());
}

async fn condition(f: &Fixture, field: &str) -> String {
    vmi_field(
        f,
        &format!(".status.conditions[?(@.type==\"Paused\")].{field}"),
    )
    .await
}

async fn printable(f: &Fixture) -> String {
    kubectl(
        f.cp,
        &[
            "get",
            "vm",
            VM,
            "-n",
            f.ns.name(),
            "-o",
            "jsonpath={.status.printableStatus}",
        ],
    )
    .await
}

/// `pause vmi demo`, the Paused condition and printableStatus, then `unpause`.
async fn pause_and_unpause(f: &Fixture, program: &std::path::Path) {
    let name = program.file_name().unwrap().to_string_lossy().to_string();
    let run = |args: Vec<&str>| {
        let mut all = vec![
            "--kubeconfig".to_string(),
            f.cp.kubeconfig().display().to_string(),
            "-n".into(),
            f.ns.name().into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let program = program.to_path_buf();
        async move {
            tokio::process::Command::new(program)
                .args(all)
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .unwrap()
        }
    };
    let scheduled = |out: std::process::Output, verb: &str| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} {verb}: {err}");
        let line = format!("VMI demo was scheduled to {verb}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), line);
    };
    scheduled(run(vec!["pause", "vmi", VM]).await, "pause");
    wait_until(f, "Paused condition True, PausedByUser", STEP, || async {
        condition(f, "status").await == "True" && condition(f, "reason").await == "PausedByUser"
    })
    .await;
    wait_until(f, "VM printableStatus Paused", STEP, || async {
        printable(f).await == "Paused"
    })
    .await;

    let again = run(vec!["pause", "vmi", VM]).await;
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("VMI is already paused"), "{name}: {err}");

    scheduled(run(vec!["unpause", "vmi", VM]).await, "unpause");
    wait_until(f, "Paused condition gone", STEP, || async {
        condition(f, "status").await.is_empty()
    })
    .await;
    wait_until(f, "VM printableStatus Running", STEP, || async {
        printable(f).await == "Running"
    })
    .await;
    let again = run(vec!["unpause", "vmi", VM]).await;
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("VMI is not paused"),
        "{name}: {err}"
    );
}

#[tokio::test]
async fn pause_and_unpause_with_virtctl_and_ferroctl() {
    let f = fixture().await;
    let _turn = TURN.lock().await;
    pause_and_unpause(f, &virtctl_path()).await;
    pause_and_unpause(f, &ferroctl()).await;
    // The guest runs again: its console answers.
    let mut c = console(&ferroctl(), &f.cp.kubeconfig(), f.ns.name());
    echo_answered(&mut c, 9).await;
    // ferroctl's refusal is one line.
    let out = tokio::process::Command::new(ferroctl())
        .arg("--kubeconfig")
        .arg(f.cp.kubeconfig())
        .args(["-n", f.ns.name(), "unpause", "vmi", VM])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"demo\": VMI is not paused"
    );
}

#[tokio::test]
async fn vnc_proxy_only_serves_the_rfb_handshake() {
    let f = fixture().await;
    let _turn = TURN.lock().await;
    for program in [virtctl_path(), ferroctl()] {
        let c = Client::spawn(
            &program,
            &f.cp.kubeconfig(),
            &["-n", f.ns.name(), "vnc", VM, "--proxy-only"],
        )
        .unwrap();
        c.expect("{\"port\":", false, STEP).await;
        let line = c.stdout();
        let json: serde_json::Value =
            serde_json::from_str(line.lines().next().unwrap().trim()).unwrap();
        let port = json["port"].as_u64().unwrap_or_else(|| panic!("{line}"));
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
        tcp.set_read_timeout(Some(STEP)).unwrap();
        let mut hello = [0u8; 12];
        tcp.read_exact(&mut hello)
            .unwrap_or_else(|e| panic!("{program:?}: reading RFB: {e}; stderr: {}", c.stderr()));
        let text = String::from_utf8_lossy(&hello);
        assert!(text.starts_with("RFB 003.00"), "{program:?}: {text:?}");
        // Our half of the handshake: the same version, then the security types follow.
        tcp.write_all(&hello).unwrap();
        let mut n = [0u8; 1];
        tcp.read_exact(&mut n).unwrap();
        assert!(n[0] > 0, "QEMU offered no security type");
    }
}

#[tokio::test]
async fn kubevirt_view_is_refused_the_console_and_kubevirt_edit_gets_it() {
    let f = fixture().await;
    let _turn = TURN.lock().await;
    let ns = f.ns.name();
    apply_in(
        f.cp,
        ns,
        &role_binding("console-viewer", "kubevirt.io:view"),
    )
    .await;
    apply_in(
        f.cp,
        ns,
        &role_binding("console-editor", "kubevirt.io:edit"),
    )
    .await;
    let viewer = user_kubeconfig(f.cp, "console-viewer", &[]).unwrap();
    let editor = user_kubeconfig(f.cp, "console-editor", &[]).unwrap();

    let mut v = console(&virtctl_path(), &viewer, ns);
    let status = v.exit(STEP).await.expect("virtctl gives up on a 403");
    assert!(!status.success());
    assert!(
        v.stderr().contains("cannot get resource \"virtualmachineinstances/console\" in API group \"subresources.kubevirt.io\""),
        "{}",
        v.stderr()
    );
    let out = tokio::process::Command::new(ferroctl())
        .arg("--kubeconfig")
        .arg(&viewer)
        .args(["-n", ns, "console", VM])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: forbidden: ") && err.trim().lines().count() == 1,
        "{err}"
    );

    for program in [virtctl_path(), ferroctl()] {
        let mut e = console(&program, &editor, ns);
        echo_answered(&mut e, 5).await;
    }
}

#[tokio::test]
async fn virt_handler_refuses_clients_without_its_client_certificate() {
    let f = fixture().await;
    let _turn = TURN.lock().await;
    let (address, secrets) = handler_address(f).await;
    let (bundle, ca) = handler_cas(&secrets).await;

    // A certificate of the handlers' CA (as virt-api has): served.
    let answer = handler_request(&address, &bundle, Some(client_cert(&ca))).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    // No client certificate, or one of another CA (the cluster's admin): refused.
    assert_eq!(
        handler_request(&address, &bundle, None).await,
        "",
        "served without a client certificate"
    );
    let pki = f.cp.pki();
    let admin = (
        std::fs::read_to_string(pki.cert("admin")).unwrap(),
        std::fs::read_to_string(pki.key("admin")).unwrap(),
    );
    assert_eq!(
        handler_request(&address, &bundle, Some(admin)).await,
        "",
        "served a certificate of another CA"
    );
}

/// The address the node's handler published, and the Secrets of its namespace.
async fn handler_address(f: &Fixture) -> (String, Api<Secret>) {
    let client = f.cp.client().await.unwrap();
    let node = Api::<Node>::all(client.clone())
        .get(&f.stack.node_name)
        .await
        .unwrap();
    let address = node.metadata.annotations.unwrap()[ADDRESS_ANNOTATION].clone();
    (address, Api::namespaced(client, SYSTEM_NAMESPACE))
}

/// The bundle the handlers trust (`ca.crt` of their Secret) and the current CA (certificate
/// and key PEM, from Secret kubevirt-ca).
async fn handler_cas(secrets: &Api<Secret>) -> (String, (String, String)) {
    let text =
        |s: &Secret, k: &str| String::from_utf8(s.data.as_ref().unwrap()[k].0.clone()).unwrap();
    let server = secrets.get(SERVER_CERTS_SECRET).await.unwrap();
    let ca = secrets.get("kubevirt-ca").await.unwrap();
    (
        text(&server, "ca.crt"),
        (text(&ca, "tls.crt"), text(&ca, "tls.key")),
    )
}

/// A client certificate signed by `ca` (certificate and key PEM).
fn client_cert(ca: &(String, String)) -> (String, String) {
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca.0, rcgen::KeyPair::from_pem(&ca.1).unwrap()).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A PUT for a VMI that is not there, straight to the handler: its answer, or "" when the
/// TLS session fails.
async fn handler_request(address: &str, bundle: &str, cert: Option<(String, String)>) -> String {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        None => builder.with_no_client_auth(),
        Some((c, k)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(c.as_bytes())
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let Ok(mut tls) = connector
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
    else {
        return String::new();
    };
    let req = "PUT /v1/namespaces/x/virtualmachineinstances/y/pause?uid=not-here HTTP/1.1\r\n\
               Host: virt-handler\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    if tls.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_quiet_console_survives_a_proxy_that_drops_idle_connections() {
    let f = fixture().await;
    let _turn = TURN.lock().await;
    let idle = Duration::from_secs(2);
    let upstream = f.cp.server().trim_start_matches("https://").to_string();
    let port = idle_dropping_proxy(upstream, idle).await.unwrap();
    // The proxy does drop a quiet connection.
    let mut quiet = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let started = Instant::now();
    let n = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read(&mut quiet, &mut buf),
    )
    .await
    .expect("the proxy drops an idle connection");
    assert_eq!(n.unwrap_or(0), 0);
    assert!(started.elapsed() >= idle);

    // A kubeconfig through the proxy; virtctl's console stays quiet for 3 idle periods.
    let text = std::fs::read_to_string(f.cp.kubeconfig()).unwrap();
    let through = text.replace(f.cp.server(), &format!("https://127.0.0.1:{port}"));
    assert_ne!(through, text);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, through).unwrap();
    let mut c = console(&virtctl_path(), &kubeconfig, f.ns.name());
    c.expect("Successfully connected", true, STEP).await;
    tokio::time::sleep(idle * 3).await;
    assert!(c.running(), "the console ended while quiet: {}", c.stderr());
    echo_answered(&mut c, 11).await;
}

#[tokio::test]
async fn a_second_console_replaces_the_first_which_ends_cleanly() {
    let f = fixture().await;
    let _turn = TURN.lock().await;
    let mut first = console(&virtctl_path(), &f.cp.kubeconfig(), f.ns.name());
    echo_answered(&mut first, 12).await;
    let mut second = console(&ferroctl(), &f.cp.kubeconfig(), f.ns.name());
    let status = first
        .exit(STEP)
        .await
        .expect("the first console ends when a second one connects");
    assert!(status.success(), "virtctl: {status:?}\n{}", first.stderr());
    assert!(
        !first.stderr().contains("You were disconnected"),
        "{}",
        first.stderr()
    );
    echo_answered(&mut second, 13).await;
    // And the other way round: ferroctl says why it was closed.
    let mut third = console(&virtctl_path(), &f.cp.kubeconfig(), f.ns.name());
    let status = second.exit(STEP).await.expect("ferroctl's console ends");
    assert!(status.success(), "{}", second.stderr());
    second
        .expect("a newer connection replaced this one", true, STEP)
        .await;
    echo_answered(&mut third, 14).await;
}

/// A forced rotation of the virt-api -> virt-handler CA (its Secret deleted): virt-api makes
/// a new CA and re-issues the handlers' certificate; once the handler has re-read it (30 s
/// at most; virtctl retries the 400 virt-api answers meanwhile) consoles work again, the
/// handler takes certificates of the new CA and refuses those of the old one.
#[tokio::test]
async fn the_handler_ca_is_rotated_and_consoles_work_with_the_new_one() {
    let f = fixture().await;
    let _turn = TURN.lock().await;
    let (address, secrets) = handler_address(f).await;
    let (_, old) = handler_cas(&secrets).await;
    secrets
        .delete("kubevirt-ca", &Default::default())
        .await
        .unwrap();
    let started = Instant::now();
    let (bundle, new) = loop {
        if secrets.get_opt("kubevirt-ca").await.unwrap().is_some() {
            let (bundle, new) = handler_cas(&secrets).await;
            if new.0 != old.0 && bundle == new.0 {
                break (bundle, new);
            }
        }
        assert!(
            started.elapsed() < STEP,
            "no new CA {} s after its Secret was deleted",
            STEP.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut c = Client::spawn(
        &virtctl_path(),
        &f.cp.kubeconfig(),
        &["-n", f.ns.name(), "console", "--timeout=2", VM],
    )
    .unwrap();
    echo_answered(&mut c, 15).await;
    eprintln!(
        "consoles worked again {} ms after the CA Secret was deleted",
        started.elapsed().as_millis()
    );
    let served = handler_request(&address, &bundle, Some(client_cert(&new))).await;
    assert!(served.starts_with("HTTP/1.1 404"), "{served}");
    let old_cert = handler_request(&address, &bundle, Some(client_cert(&old))).await;
    assert_eq!(old_cert, "", "a certificate of the old CA was served");
}
