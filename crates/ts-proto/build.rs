//! Compiles `proto/` with protox (pure Rust, no system protoc) and generates tonic code.

use std::path::PathBuf;

use prost::Message;

/// Messages whose fields hold codes, tokens or key bytes; their `Debug` redacts them.
const SECRET_MESSAGES: &[&str] = &[
    "teamshare.v1.CompleteEmailVerificationRequest",
    "teamshare.v1.SessionTokens",
    "teamshare.v1.SignInWithSsoRequest",
    "teamshare.v1.RefreshSessionRequest",
    "teamshare.internal.v1.GetDataKeyResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: the compiled script may be reused from a checkout at another path.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut files = Vec::new();
    for dir in ["teamshare/v1", "teamshare/internal/v1"] {
        let mut names: Vec<_> = std::fs::read_dir(root.join(dir))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".proto"))
            .collect();
        names.sort();
        files.extend(names.into_iter().map(|n| format!("{dir}/{n}")));
    }
    // Each directory (a file added or removed) and each file (an edit).
    for dir in ["teamshare/v1", "teamshare/internal/v1"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }

    let fds = protox::Compiler::new([&root])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(&files)?
        .file_descriptor_set();

    // The public API alone (and what it imports): what the gateway's reflection may describe.
    let public: Vec<&String> = files.iter().filter(|f| f.starts_with("teamshare/v1/")).collect();
    let public_fds = protox::Compiler::new([&root])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(&public)?
        .file_descriptor_set();
    if public_fds.file.iter().any(|f| f.package().starts_with("teamshare.internal")) {
        return Err("a public proto imports an internal one".into());
    }

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("teamshare_descriptor.bin"), fds.encode_to_vec())?;
    std::fs::write(out.join("teamshare_public_descriptor.bin"), public_fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Services implement the RPCs their issue has delivered; the rest answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        // prost's codec, with decode failures marked so that servers answer INVALID_ARGUMENT.
        .codec_path("crate::codec::MarkingCodec")
        // Messages that carry secrets get a redacting Debug in lib.rs instead.
        .skip_debug(SECRET_MESSAGES)
        .compile_fds(fds)?;
    Ok(())
}
