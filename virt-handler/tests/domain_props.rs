//! Property test of the domain conversion (issue 12): any VMI spec that the CRD's schema
//! lets through the API server deserializes into Ferrovirt's types, and then converts to a
//! domain libvirt accepts, or fails with an error that names the field or volume — never a
//! panic, never an I/O or internal error.
//!
//! The specs come from the generated CRD's own OpenAPI schema (types, enums, patterns,
//! bounds, required fields, int-or-string), so the generator follows the schema as it
//! changes. Names are drawn from a small set so that disks, volumes and interfaces often
//! refer to each other, and images from the image store, so conversions get far.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use proptest::string::string_regex;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value};
use virt_handler::config::Virtualization;
use virt_handler::domain::{Input, convert};
use virt_handler::volumes::{ClaimDir, HostDiskPolicy, plan};

const NAMES: &[&str] = &["a", "b", "disk0", "default"];

/// The references in the store, plus one that is not there.
fn images(store: &Path) -> Vec<Value> {
    let index = std::fs::read_to_string(store.join("index.tsv")).expect("index.tsv");
    let mut out: Vec<Value> = index
        .lines()
        .filter_map(|l| l.split('\t').next())
        .map(|r| Value::String(r.into()))
        .collect();
    out.push("example.org/not-in-store:1".into());
    out
}

/// The VMI CRD's schema of `spec`.
fn spec_schema() -> Value {
    let crds = crds::all();
    let vmi = crds
        .iter()
        .find(|c| c.spec.names.kind == "VirtualMachineInstance")
        .expect("the VMI CRD");
    let schema = serde_json::to_value(&vmi.spec.versions[0].schema).expect("schema");
    schema["openAPIV3Schema"]["properties"]["spec"].clone()
}

struct Gen {
    images: Vec<Value>,
}

impl Gen {
    fn value(&self, key: &str, schema: &Value, depth: u32) -> BoxedStrategy<Value> {
        let inner = self.non_null(key, schema, depth);
        if schema.get("nullable") == Some(&Value::Bool(true)) {
            prop_oneof![9 => inner, 1 => Just(Value::Null)].boxed()
        } else {
            inner
        }
    }

    fn non_null(&self, key: &str, schema: &Value, depth: u32) -> BoxedStrategy<Value> {
        if let Some(Value::Array(values)) = schema.get("enum") {
            return proptest::sample::select(values.clone()).boxed();
        }
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            let min = bound(schema, "minimum").unwrap_or(0);
            let string = match schema.get("pattern").and_then(Value::as_str) {
                Some(p) => regex(p),
                None => "[0-9]{1,4}".prop_map(Value::String).boxed(),
            };
            let max = bound(schema, "maximum").unwrap_or(min + (1 << 34));
            return prop_oneof![string, (min..=max).prop_map(Value::from)].boxed();
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => self.object(schema, depth),
            Some("array") => {
                let max = schema
                    .get("maxItems")
                    .and_then(Value::as_u64)
                    .unwrap_or(3)
                    .min(3) as usize;
                let items = self.value(key, &schema["items"], depth + 1);
                proptest::collection::vec(items, 0..=max)
                    .prop_map(Value::Array)
                    .boxed()
            }
            Some("string") => self.string(key, schema),
            Some("integer") => {
                let min = bound(schema, "minimum").unwrap_or(-3);
                let max = bound(schema, "maximum").unwrap_or(1 << 40);
                prop_oneof![
                    Just(min),
                    Just(max),
                    min..=max.min(min.saturating_add(64)),
                    min..=max
                ]
                .prop_map(Value::from)
                .boxed()
            }
            Some("number") => (-1e6f64..1e9).prop_map(Value::from).boxed(),
            Some("boolean") => any::<bool>().prop_map(Value::Bool).boxed(),
            _ => Just(Value::Object(Map::new())).boxed(),
        }
    }

    fn string(&self, key: &str, schema: &Value) -> BoxedStrategy<Value> {
        if key == "name" || key == "claimName" || key == "networkName" {
            return proptest::sample::select(NAMES)
                .prop_map(|n| Value::String(n.into()))
                .boxed();
        }
        if key == "image" {
            return proptest::sample::select(self.images.clone()).boxed();
        }
        if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
            return regex(p);
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time") {
            return Just(Value::String("2026-12-02T00:00:00Z".into())).boxed();
        }
        let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
        let max = schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .unwrap_or(24)
            .min(24)
            .max(min);
        prop_oneof![
            string_regex(&format!("[a-z0-9/._-]{{{min},{max}}}")).expect("regex"),
            string_regex(&format!("\\PC{{{min},{max}}}")).expect("regex"),
        ]
        .prop_map(Value::String)
        .boxed()
    }

    fn object(&self, schema: &Value, depth: u32) -> BoxedStrategy<Value> {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut fields: Vec<BoxedStrategy<Option<(String, Value)>>> = Vec::new();
        if let Some(Value::Object(props)) = schema.get("properties") {
            for (name, sub) in props {
                let strategy = self.value(name, sub, depth + 1);
                let n = name.clone();
                let pair = strategy.prop_map(move |v| (n.clone(), v));
                fields.push(if required.contains(&name.as_str()) {
                    pair.prop_map(Some).boxed()
                } else if depth < 7 {
                    proptest::option::weighted(0.35, pair).boxed()
                } else {
                    Just(None).boxed()
                });
            }
        }
        let extra = match schema.get("additionalProperties") {
            Some(sub @ Value::Object(_)) if depth < 7 => proptest::collection::btree_map(
                "[a-z][a-z./-]{0,10}",
                self.value("", sub, depth + 1),
                0..3,
            )
            .boxed(),
            _ => Just(BTreeMap::new()).boxed(),
        };
        (fields, extra)
            .prop_map(|(fields, extra)| {
                let mut map: Map<String, Value> = extra.into_iter().collect();
                map.extend(fields.into_iter().flatten());
                Value::Object(map)
            })
            .boxed()
    }
}

/// `minimum`/`maximum` (the generated CRD writes them as floats: `1.0`).
fn bound(schema: &Value, key: &str) -> Option<i64> {
    schema.get(key).and_then(Value::as_f64).map(|f| f as i64)
}

fn regex(pattern: &str) -> BoxedStrategy<Value> {
    let unanchored = pattern.trim_start_matches('^').trim_end_matches('$');
    string_regex(unanchored)
        .unwrap_or_else(|e| panic!("pattern {pattern} is not a regex proptest reads: {e}"))
        .prop_map(Value::String)
        .boxed()
}

#[test]
fn any_spec_the_schema_accepts_converts_or_names_the_field() {
    let store = ferrovirt_tests::image_store();
    let generator = Gen {
        images: images(&store),
    };
    // Most generated specs lack memory, which stops the conversion at its first check:
    // give most of them some, so the rest of the spec is exercised too.
    let strategy = (
        generator.value("spec", &spec_schema(), 0),
        proptest::bool::weighted(0.8),
    )
        .prop_map(|(mut spec, add_memory)| {
            let domain = &mut spec["domain"];
            if add_memory
                && domain
                    .get("memory")
                    .is_none_or(|m| m.get("guest").is_none())
            {
                domain["memory"] = serde_json::json!({"guest": "64Mi"});
            }
            spec
        });
    let vmi_dir = Path::new("/var/run/ferrovirt/vmis/props");
    let host_disks = HostDiskPolicy::allow(&["/var/data"]);
    let pvcs: BTreeMap<String, ClaimDir> = NAMES
        .iter()
        .map(|n| {
            let dir = ClaimDir {
                launcher: PathBuf::from("/var/lib/pv").join(n),
                in_pod: false,
                image_size: None,
                block: false,
            };
            (n.to_string(), dir)
        })
        .collect();
    let out = tempfile::tempdir().expect("tempdir");
    // The runner takes a `Fn`: tallies in cells.
    let (converted, sampled) = (Cell::new(0u32), Cell::new(0u32));
    let refused = RefCell::new(BTreeMap::<String, u32>::new());
    let mut runner = TestRunner::new(Config {
        cases: 1500,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |json| {
            let spec: crds::VirtualMachineInstanceSpec = serde_json::from_value(json.clone())
                .map_err(|e| {
                    TestCaseError::fail(format!(
                        "the schema accepts a spec Ferrovirt's types cannot read ({e}): {json}"
                    ))
                })?;
            for virtualization in [Virtualization::Kvm, Virtualization::Emulation] {
                let result = plan(&spec, vmi_dir, &pvcs, &host_disks).and_then(|plans| {
                    convert(&Input {
                        namespace: "default",
                        name: "props",
                        uid: "00000000-0000-0000-0000-000000000001",
                        spec: &spec,
                        virtualization,
                        vmi_dir,
                        kernel_root: Path::new("/proc/4242/root"),
                        volumes: &plans,
                        pod_cpus: &[],
                        host_nodes: &[],
                    })
                });
                match result {
                    Ok(xml) => {
                        converted.set(converted.get() + 1);
                        // libvirt's own schema on a sample (a process each: keep it short).
                        if converted.get() % 25 == 1 {
                            sampled.set(sampled.get() + 1);
                            let file = out.path().join(format!("{}.xml", converted.get()));
                            std::fs::write(&file, &xml).expect("write xml");
                            let check = Command::new("virt-xml-validate")
                                .arg(&file)
                                .arg("domain")
                                .output()
                                .expect("virt-xml-validate (libvirt-clients; run hack/setup.sh)");
                            prop_assert!(
                                check.status.success(),
                                "libvirt refuses the domain of {json}:\n{}{}\n{xml}",
                                String::from_utf8_lossy(&check.stdout),
                                String::from_utf8_lossy(&check.stderr)
                            );
                        }
                    }
                    Err(e) => {
                        use virt_handler::Error as E;
                        let kind = match &e {
                            E::Unsupported { field, .. } | E::NotInImage { field, .. } => {
                                prop_assert!(
                                    field.starts_with("spec."),
                                    "error without a spec field: {e}"
                                );
                                let path = field.split('[').next().unwrap_or(field);
                                path.split('.').take(3).collect::<Vec<_>>().join(".")
                            }
                            E::Volume { volume, .. } => {
                                prop_assert!(!volume.is_empty(), "{e}");
                                "volume".into()
                            }
                            E::ImageNotFound { .. } => "image not in store".into(),
                            other => {
                                return Err(TestCaseError::fail(format!(
                                    "{other} ({other:?}) is not a refusal naming a field, for {json}"
                                )));
                            }
                        };
                        *refused.borrow_mut().entry(kind).or_default() += 1;
                    }
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "conversions: {} converted ({} checked by virt-xml-validate), refused: {:?}",
        converted.get(),
        sampled.get(),
        refused.borrow()
    );
    assert!(
        converted.get() > 0 && sampled.get() > 0,
        "no generated spec converted: the generator no longer reaches the conversion"
    );
}
