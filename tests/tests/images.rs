//! deploy/images/oci.py, the layer and image writer of hack/build-images.sh, on small trees:
//! a diff layer holds what changed (with parent directories) and a whiteout per removed
//! path, an unchanged tree gives the same digest again (so an unchanged binary layer is not
//! pushed again), and the image's config lists the layers' diff_ids in order.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use ferrovirt_tests::repo_root;
use serde_json::Value;

fn oci(args: &[&str]) -> Value {
    let script = repo_root().join("deploy/images/oci.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("python3 runs (apt-get install python3)");
    assert!(
        out.status.success(),
        "oci.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("oci.py prints JSON")
}

/// `tar -tzf`: the entry names of a gzip layer.
fn entries(layer: &Path) -> Vec<String> {
    let out = Command::new("tar").arg("-tzf").arg(layer).output().unwrap();
    assert!(out.status.success(), "{layer:?} is not a gzip tar");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn diff_layer_whiteouts_reproducible_digests_and_image_config() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, top) = (tmp.path().join("base"), tmp.path().join("top"));
    for root in [&base, &top] {
        write(&root.join("etc/kept"), "same");
        write(&root.join("usr/lib/x/unchanged.so"), "lib");
        write(&root.join("etc/changed"), "old");
        write(&root.join("var/gone/inner"), "x");
        write(&root.join("etc/removed"), "x");
    }
    write(&top.join("etc/changed"), "new content");
    write(&top.join("usr/bin/qemu"), "added");
    symlink("qemu", top.join("usr/bin/kvm")).unwrap();
    fs::remove_file(top.join("etc/removed")).unwrap();
    fs::remove_dir_all(top.join("var/gone")).unwrap();
    write(&base.join("var/gone2/deep/file"), "x");

    let diff = tmp.path().join("diff.tar.gz");
    let meta = oci(&[
        "layer-diff",
        base.to_str().unwrap(),
        top.to_str().unwrap(),
        diff.to_str().unwrap(),
    ]);
    let mut names = entries(&diff);
    names.sort();
    assert_eq!(
        names,
        [
            "etc",
            "etc/.wh.removed",
            "etc/changed",
            "usr",
            "usr/bin",
            "usr/bin/kvm",
            "usr/bin/qemu",
            "var/.wh.gone",
            "var/.wh.gone2",
        ],
        "the diff layer: {meta}"
    );

    // The same tree twice: the same layer, byte for byte.
    let bin = tmp.path().join("bin");
    write(&bin.join("virt-api"), "binary");
    let digests: Vec<Value> = (0..2)
        .map(|i| {
            let out = tmp.path().join(format!("bin{i}.tar.gz"));
            oci(&[
                "layer-dir",
                bin.to_str().unwrap(),
                out.to_str().unwrap(),
                "--under",
                "usr/local/bin",
                "--owner",
                "0:0",
            ])["digest"]
                .clone()
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
    assert_eq!(
        entries(&tmp.path().join("bin0.tar.gz")),
        [
            "usr",
            "usr/local",
            "usr/local/bin",
            "usr/local/bin/virt-api"
        ]
    );

    // An image of both layers, in order.
    let config = tmp.path().join("config.json");
    fs::write(&config, r#"{"User": "65532:65532", "Entrypoint": ["/usr/local/bin/virt-api"], "history": ["diff", "bin"]}"#).unwrap();
    let layout = tmp.path().join("layout");
    let bin0 = tmp.path().join("bin0.tar.gz");
    oci(&[
        "image",
        layout.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        diff.to_str().unwrap(),
        bin0.to_str().unwrap(),
    ]);
    let read = |digest: &str| -> Value {
        let file = layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        serde_json::from_slice(&fs::read(file).unwrap()).unwrap()
    };
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let image = read(manifest["config"]["digest"].as_str().unwrap());
    let layer_meta = |p: &str| -> Value {
        serde_json::from_slice(&fs::read(tmp.path().join(p)).unwrap()).unwrap()
    };
    assert_eq!(
        image["rootfs"]["diff_ids"],
        serde_json::json!([
            layer_meta("diff.tar.gz.json")["diff_id"],
            layer_meta("bin0.tar.gz.json")["diff_id"]
        ])
    );
    assert_eq!(manifest["layers"][1]["digest"], digests[0]);
    assert_eq!(image["config"]["User"], "65532:65532");
}
