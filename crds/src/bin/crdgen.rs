//! Writes the CRD YAML of every Ferrovirt CRD into `crds/yaml/` (or the directory given
//! as the first argument). Run: `cargo run -p ferrovirt-crds --bin crdgen`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("yaml"));
    std::fs::create_dir_all(&dir)?;
    for crd in crds::all() {
        let path = dir.join(crds::file_name(&crd));
        std::fs::write(&path, crds::to_yaml(&crd))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
