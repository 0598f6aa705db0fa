//! The types read KubeVirt's own manifests and mean what KubeVirt means.

use crds::{RunStrategy, VirtualMachine, VirtualMachineSpec};

fn spec(run_strategy: Option<RunStrategy>, running: Option<bool>) -> VirtualMachineSpec {
    VirtualMachineSpec {
        run_strategy,
        running,
        ..Default::default()
    }
}

#[test]
fn effective_run_strategy_follows_kubevirt() {
    assert_eq!(
        spec(None, Some(true)).effective_run_strategy(),
        RunStrategy::Always
    );
    assert_eq!(
        spec(None, Some(false)).effective_run_strategy(),
        RunStrategy::Halted
    );
    assert_eq!(
        spec(None, None).effective_run_strategy(),
        RunStrategy::Halted
    );
    assert_eq!(
        spec(Some(RunStrategy::Manual), None).effective_run_strategy(),
        RunStrategy::Manual
    );
}

#[test]
fn kubevirt_example_vm_round_trips() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/kubevirt-examples/vm-cirros.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let vm: VirtualMachine = serde_yaml::from_str(&text).expect("vm-cirros.yaml parses");
    assert_eq!(vm.spec.effective_run_strategy(), RunStrategy::Halted);
    let vmi = &vm.spec.template.spec;
    assert_eq!(vmi.domain.devices.disks.len(), 2);
    assert_eq!(
        vmi.volumes[1]
            .cloud_init_no_cloud
            .as_ref()
            .unwrap()
            .user_data
            .as_deref()
            .map(|s| s.contains("printed from cloud-init userdata")),
        Some(true)
    );
    let back: serde_json::Value = serde_json::to_value(&vm).unwrap();
    assert_eq!(
        back["spec"]["template"]["spec"]["domain"]["memory"]["guest"],
        "128Mi"
    );
    assert!(
        back["spec"].get("running").is_none(),
        "unset fields are not written"
    );
}

#[test]
fn realtime_masks_read_as_libvirt_cpusets() {
    let rt = |m: Option<&str>| crds::Realtime {
        mask: m.map(str::to_owned),
    };
    assert_eq!(rt(None).vcpus(3), Ok(vec![0, 1, 2]));
    assert_eq!(rt(Some("")).vcpus(2), Ok(vec![0, 1]));
    assert_eq!(rt(Some("0-3,^1")).vcpus(4), Ok(vec![0, 2, 3]));
    assert_eq!(rt(Some("0,2, 3")).vcpus(4), Ok(vec![0, 2, 3]));
    for (mask, says) in [
        ("4", "names vCPU 4, but the guest has vCPUs 0 to 3"),
        ("3-1", "ends before it starts"),
        ("0,^0", "leaves no vCPU"),
        ("a", "is not a vCPU"),
    ] {
        let err = rt(Some(mask)).vcpus(4).unwrap_err();
        assert!(err.contains(says), "{mask}: {err}");
    }
}
