//! [`super::plan`] as a table: what a pool does for the VMs it sees; [`super::vm_for`].

use crds::{VirtualMachine, VirtualMachinePool};
use kube::ResourceExt;
use serde_json::json;

use super::{Seen, plan, vm_for};

fn pool(replicas: i32) -> VirtualMachinePool {
    serde_json::from_value(json!({
        "apiVersion": "pool.kubevirt.io/v1beta1", "kind": "VirtualMachinePool",
        "metadata": {"name": "p", "namespace": "ns", "uid": "pool-uid", "generation": 4},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "p"}},
            "virtualMachineTemplate": {"metadata": {"labels": {"app": "p"}, "annotations": {"a": "b"}},
                "spec": {"runStrategy": "Always",
                    "dataVolumeTemplates": [{"metadata": {"name": "disk"}, "spec": {}}],
                    "template": {"metadata": {"labels": {"app": "p"}}, "spec": {
                        "domain": {"memory": {"guest": "64Mi"}},
                        "volumes": [{"name": "d", "dataVolume": {"name": "disk"}},
                            {"name": "c", "persistentVolumeClaim": {"claimName": "disk"}},
                            {"name": "shared", "persistentVolumeClaim": {"claimName": "other"}}]}}}}}
    }))
    .unwrap()
}

/// A VM: its name, owner UID (None: none), app label, Ready, being deleted.
fn vm(name: &str, owner: Option<&str>, app: &str, ready: bool, deleting: bool) -> VirtualMachine {
    let mut meta = json!({"name": name, "namespace": "ns", "uid": format!("{name}-uid"),
        "labels": {"app": app}});
    if let Some(uid) = owner {
        meta["ownerReferences"] = json!([{"apiVersion": "pool.kubevirt.io/v1beta1",
            "kind": "VirtualMachinePool", "name": "p", "uid": uid, "controller": true}]);
    }
    if deleting {
        meta["deletionTimestamp"] = json!("2026-12-03T11:00:00Z");
    }
    serde_json::from_value(
        json!({"metadata": meta, "spec": {"template": {"spec": {"domain": {}}}},
        "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}}),
    )
    .unwrap()
}

fn mine(name: &str, ready: bool) -> VirtualMachine {
    vm(name, Some("pool-uid"), "p", ready, false)
}

#[test]
fn pool_plans() {
    struct Case {
        name: &'static str,
        replicas: i32,
        vms: Vec<VirtualMachine>,
        create: &'static [u32],
        delete: &'static [&'static str],
        release: &'static [&'static str],
        active: usize,
        ready: usize,
    }
    let cases = vec![
        Case {
            name: "creates the lowest free indexes",
            replicas: 3,
            vms: vec![mine("p-1", true), vm("p-0", None, "x", false, false)],
            create: &[2, 3],
            delete: &[],
            release: &[],
            active: 1,
            ready: 1,
        },
        Case {
            name: "scales in not ready first, then the highest index",
            replicas: 1,
            vms: vec![
                mine("p-0", true),
                mine("p-1", false),
                mine("p-2", true),
                mine("p-10", true),
            ],
            create: &[],
            delete: &["p-1", "p-10", "p-2"],
            release: &[],
            active: 4,
            ready: 3,
        },
        Case {
            name: "a VM being deleted counts until it is gone",
            replicas: 2,
            vms: vec![
                mine("p-0", true),
                vm("p-1", Some("pool-uid"), "p", true, true),
                mine("p-2", true),
            ],
            create: &[],
            delete: &[],
            release: &[],
            active: 2,
            ready: 2,
        },
        Case {
            name: "a VM being deleted is not deleted twice",
            replicas: 1,
            vms: vec![
                mine("p-0", true),
                vm("p-1", Some("pool-uid"), "p", true, true),
                mine("p-2", true),
            ],
            create: &[],
            delete: &["p-2"],
            release: &[],
            active: 2,
            ready: 2,
        },
        Case {
            name: "adopts no orphan, releases what it no longer selects",
            replicas: 1,
            vms: vec![
                vm("p-0", None, "p", true, false),
                vm("p-1", Some("pool-uid"), "x", true, false),
                vm("p-2", Some("other"), "p", true, false),
            ],
            create: &[3],
            delete: &[],
            release: &["p-1"],
            active: 0,
            ready: 0,
        },
    ];
    for c in cases {
        let p = pool(c.replicas);
        let seen = Seen {
            pool: &p,
            vms: c.vms.iter().collect(),
            settled: true,
        };
        let got = plan(&seen);
        assert_eq!(got.tally.invalid, None, "{}", c.name);
        assert_eq!(got.create, c.create, "{}: create", c.name);
        let deleted: Vec<String> = got.delete.iter().map(|v| v.name_any()).collect();
        assert_eq!(deleted, c.delete, "{}: delete", c.name);
        let released: Vec<String> = got.release.iter().map(|v| v.name_any()).collect();
        assert_eq!(released, c.release, "{}: release", c.name);
        assert_eq!(
            (got.tally.active, got.tally.ready),
            (c.active, c.ready),
            "{}: counts",
            c.name
        );
    }
}

#[test]
fn a_paused_or_unsettled_pool_only_counts() {
    let mut p = pool(3);
    let seen = Seen {
        pool: &p,
        vms: vec![],
        settled: false,
    };
    assert!(plan(&seen).create.is_empty());
    p.spec.paused = true;
    let seen = Seen {
        pool: &p,
        vms: vec![],
        settled: true,
    };
    assert!(plan(&seen).create.is_empty());
}

#[test]
fn a_pool_vm_has_its_index_its_labels_and_its_own_disks() {
    let p = pool(1);
    let vm = vm_for(&p, 7);
    assert_eq!(vm.name_any(), "p-7");
    assert_eq!(vm.labels()["app"], "p");
    assert_eq!(vm.labels()["kubevirt.io/vm-pool-revision-name"], "p-4");
    assert_eq!(vm.annotations()["a"], "b");
    let template_labels = vm
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(template_labels["kubevirt.io/vm-pool-revision-name"], "p-4");
    assert_eq!(vm.spec.data_volume_templates[0].metadata.name, "disk-7");
    let volumes = &vm.spec.template.spec.volumes;
    assert_eq!(volumes[0].data_volume.as_ref().unwrap().name, "disk-7");
    assert_eq!(
        volumes[1]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "disk-7"
    );
    assert_eq!(
        volumes[2]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "other"
    );
    let owner = &vm.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("VirtualMachinePool", Some(true))
    );
}
