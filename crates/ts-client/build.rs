//! Compiles the public API from this crate's own `proto/` (packaged with it) with protox, so
//! that neither a system protoc nor any file outside the crate is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let dir = root.join("teamshare/v1");
    let mut files: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".proto"))
        .map(|n| format!("teamshare/v1/{n}"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed={}", dir.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::Compiler::new([&root])?.include_imports(true).open_files(&files)?.file_descriptor_set();
    if fds.file.iter().any(|f| f.package().contains("internal")) {
        return Err("the SDK must compile the public API only".into());
    }
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(fds)?;
    Ok(())
}
