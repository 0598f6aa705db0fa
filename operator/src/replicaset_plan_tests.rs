//! [`super::plan`] as a table: what a replica set does for the instances it sees.

use crds::{VirtualMachineInstance, VirtualMachineInstanceReplicaSet};
use kube::ResourceExt;
use serde_json::json;

use super::{Seen, instance_for, plan};

fn rs(replicas: i32, paused: bool) -> VirtualMachineInstanceReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": "web", "namespace": "ns", "uid": "rs-uid"},
        "spec": {"replicas": replicas, "paused": paused,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web", "tier": "a"}},
                "spec": {"domain": {"memory": {"guest": "64Mi"}}}}}
    }))
    .unwrap()
}

/// A VMI: `owner` None (orphan), "rs-uid" (this set) or another UID; its labels, phase,
/// Ready, creation time (seconds), whether it is being deleted.
struct V {
    name: &'static str,
    owner: Option<&'static str>,
    app: &'static str,
    phase: &'static str,
    ready: bool,
    created: u32,
    deleting: bool,
}

const fn v(name: &'static str, phase: &'static str) -> V {
    V {
        name,
        owner: Some("rs-uid"),
        app: "web",
        phase,
        ready: false,
        created: 0,
        deleting: false,
    }
}

fn vmi(v: &V) -> VirtualMachineInstance {
    let owners = v.owner.map(|uid| {
        json!([{"apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceReplicaSet", "name": "web", "uid": uid, "controller": true}])
    });
    let mut meta = json!({"name": v.name, "namespace": "ns", "uid": format!("{}-uid", v.name),
        "labels": {"app": v.app},
        "creationTimestamp": format!("2026-12-03T10:00:{:02}Z", v.created)});
    if let Some(o) = owners {
        meta["ownerReferences"] = o;
    }
    if v.deleting {
        meta["deletionTimestamp"] = json!("2026-12-03T11:00:00Z");
    }
    serde_json::from_value(json!({"metadata": meta, "spec": {"domain": {}},
        "status": {"phase": v.phase, "conditions": [{"type": "Ready",
            "status": if v.ready {"True"} else {"False"}}]}}))
    .unwrap()
}

fn names(vmis: &[&VirtualMachineInstance]) -> Vec<String> {
    vmis.iter().map(|v| v.name_any()).collect()
}

#[test]
fn replica_set_plans() {
    struct Case {
        name: &'static str,
        replicas: i32,
        paused: bool,
        settled: bool,
        vmis: Vec<V>,
        create: usize,
        delete: &'static [&'static str],
        finished: &'static [&'static str],
        adopt: &'static [&'static str],
        release: &'static [&'static str],
        active: usize,
        ready: usize,
    }
    let running_ready = |name, created| V {
        ready: true,
        created,
        ..v(name, "Running")
    };
    let cases = vec![
        Case {
            name: "creates what is missing",
            replicas: 3,
            paused: false,
            settled: true,
            vmis: vec![v("a", "Running")],
            create: 2,
            delete: &[],
            finished: &[],
            adopt: &[],
            release: &[],
            active: 1,
            ready: 0,
        },
        Case {
            name: "scales down not ready, least advanced and newest first",
            replicas: 1,
            paused: false,
            settled: true,
            vmis: vec![
                running_ready("r1", 1),
                running_ready("r2", 2),
                v("s", "Scheduled"),
                V {
                    created: 3,
                    ..v("p-new", "Pending")
                },
                V {
                    created: 1,
                    ..v("p-old", "Pending")
                },
            ],
            create: 0,
            delete: &["p-new", "p-old", "s", "r2"],
            finished: &[],
            adopt: &[],
            release: &[],
            active: 5,
            ready: 2,
        },
        Case {
            name: "replaces finished instances",
            replicas: 2,
            paused: false,
            settled: true,
            vmis: vec![
                v("ok", "Running"),
                v("done", "Succeeded"),
                v("bad", "Failed"),
            ],
            create: 1,
            delete: &[],
            finished: &["done", "bad"],
            adopt: &[],
            release: &[],
            active: 1,
            ready: 0,
        },
        Case {
            name: "instances being deleted are not counted",
            replicas: 1,
            paused: false,
            settled: true,
            vmis: vec![V {
                deleting: true,
                ..v("going", "Running")
            }],
            create: 1,
            delete: &[],
            finished: &[],
            adopt: &[],
            release: &[],
            active: 0,
            ready: 0,
        },
        Case {
            name: "adopts selected orphans, leaves others' and unselected ones",
            replicas: 2,
            paused: false,
            settled: true,
            vmis: vec![
                V {
                    owner: None,
                    ..v("orphan", "Running")
                },
                V {
                    owner: None,
                    app: "db",
                    ..v("stranger", "Running")
                },
                V {
                    owner: Some("other"),
                    ..v("theirs", "Running")
                },
            ],
            create: 1,
            delete: &[],
            finished: &[],
            adopt: &["orphan"],
            release: &[],
            active: 1,
            ready: 0,
        },
        Case {
            name: "releases what it no longer selects",
            replicas: 1,
            paused: false,
            settled: true,
            vmis: vec![V {
                app: "db",
                ..v("relabelled", "Running")
            }],
            create: 1,
            delete: &[],
            finished: &[],
            adopt: &[],
            release: &["relabelled"],
            active: 0,
            ready: 0,
        },
        Case {
            name: "paused: counts, writes nothing",
            replicas: 3,
            paused: true,
            settled: true,
            vmis: vec![v("a", "Failed")],
            create: 0,
            delete: &[],
            finished: &[],
            adopt: &[],
            release: &[],
            active: 0,
            ready: 0,
        },
        Case {
            name: "unsettled cache: no scaling",
            replicas: 3,
            paused: false,
            settled: false,
            vmis: vec![],
            create: 0,
            delete: &[],
            finished: &[],
            adopt: &[],
            release: &[],
            active: 0,
            ready: 0,
        },
    ];
    for c in cases {
        let set = rs(c.replicas, c.paused);
        let vmis: Vec<VirtualMachineInstance> = c.vmis.iter().map(vmi).collect();
        let seen = Seen {
            rs: &set,
            vmis: vmis.iter().collect(),
            settled: c.settled,
        };
        let p = plan(&seen);
        assert_eq!(p.tally.invalid, None, "{}", c.name);
        assert_eq!(p.create, c.create, "{}: create", c.name);
        assert_eq!(names(&p.delete), c.delete, "{}: delete", c.name);
        assert_eq!(names(&p.finished), c.finished, "{}: finished", c.name);
        assert_eq!(names(&p.adopt), c.adopt, "{}: adopt", c.name);
        assert_eq!(names(&p.release), c.release, "{}: release", c.name);
        assert_eq!(
            (p.tally.active, p.tally.ready),
            (c.active, c.ready),
            "{}: counts",
            c.name
        );
        assert_eq!(p.tally.selector.as_deref(), Some("app=web"), "{}", c.name);
    }
}

#[test]
fn a_selector_that_misses_the_template_stops_the_set() {
    let mut set = rs(2, false);
    set.spec.selector.match_labels = Some([("app".to_string(), "db".to_string())].into());
    let seen = Seen {
        rs: &set,
        vmis: vec![],
        settled: true,
    };
    let p = plan(&seen);
    assert!(p.tally.invalid.unwrap().contains("spec.selector"));
    assert_eq!(p.create, 0);
}

#[test]
fn instances_are_named_after_the_set_and_controlled_by_it() {
    let mut set = rs(1, false);
    let vmi = instance_for(&set);
    assert_eq!(vmi.metadata.generate_name.as_deref(), Some("web"));
    assert_eq!(vmi.labels()["tier"], "a");
    let owner = &vmi.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("VirtualMachineInstanceReplicaSet", "rs-uid")
    );
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    set.spec.template.metadata.as_mut().unwrap().name = Some("vm-".into());
    assert_eq!(
        instance_for(&set).metadata.generate_name.as_deref(),
        Some("vm-")
    );
}
