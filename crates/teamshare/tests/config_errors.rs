//! Bad configuration stops the binary at start with one clear line naming the problem,
//! exit code 2, and no panic.

use std::path::Path;
use std::process::Command;

use ts_contract::identity::Peer;

const BIN: &str = env!("CARGO_BIN_EXE_teamshare");

fn certs(dir: &Path) -> ts_devca::DevCertPaths {
    ts_devca::write_dev_certs(&dir.join("certs")).unwrap()
}

fn auth_config(dir: &Path, listen: &str, cert: &Path, extra: &str) -> std::path::PathBuf {
    let c = certs(dir);
    let text = format!(
        "[internal_tls]\nca_cert = {:?}\n[mongodb]\nuri = \"mongodb://127.0.0.1:1\"\ndatabase = \"d\"\n[auth]\nlisten = {listen:?}\ncert = {:?}\nkey = {:?}\n{extra}",
        c.ca_cert(),
        cert,
        c.key(Peer::Auth)
    );
    let path = dir.join("teamshare.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `teamshare serve auth` and returns its stderr, asserting a clean failure.
fn fails(config: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "auth", "--config"]).arg(config);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TS_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(lines[0].starts_with("teamshare: "), "{stderr}");
    stderr
}

#[test]
fn missing_cert_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let config = auth_config(dir.path(), "127.0.0.1:0", &missing, "");
    let err = fails(&config, &[]);
    assert!(err.contains("auth.cert") && err.contains("nope.pem"), "{err}");
}

#[test]
fn unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let config = auth_config(dir.path(), "127.0.0.1:0", &c.cert(Peer::Auth), "listn = 3\n");
    let err = fails(&config, &[]);
    assert!(err.contains("auth") && err.contains("listn"), "{err}");
}

#[test]
fn invitation_limits_that_would_disable_the_limiter_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let config = auth_config(dir.path(), "127.0.0.1:0", &c.cert(Peer::Auth), "");
    let err = fails(&config, &[("TS_INVITATION_LIMITS__INVITER_BURST", "0")]);
    assert!(err.contains("invitation_limits.inviter_burst") && err.contains("at least 1"), "{err}");
    // More than one per millisecond would round the interval to nothing: no limit at all.
    let err = fails(&config, &[("TS_INVITATION_LIMITS__PER_LICENSE_PER_MINUTE", "60001")]);
    assert!(err.contains("invitation_limits.per_license_per_minute"), "{err}");
    let err = fails(&config, &[("TS_INVITATION_LIMITS__PER_INVITER_PER_MINUTE", "0")]);
    assert!(err.contains("invitation_limits.per_inviter_per_minute"), "{err}");
}

#[test]
fn bad_port_is_named_from_file_and_from_environment() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let config = auth_config(dir.path(), "127.0.0.1:99999", &c.cert(Peer::Auth), "");
    let err = fails(&config, &[]);
    assert!(err.contains("auth.listen"), "{err}");

    let config = auth_config(dir.path(), "127.0.0.1:0", &c.cert(Peer::Auth), "");
    let err = fails(&config, &[("TS_AUTH__LISTEN", "localhost:http")]);
    assert!(err.contains("auth.listen") && err.contains("TS_AUTH__LISTEN"), "{err}");
}

#[test]
fn a_port_in_use_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let c = certs(dir.path());
    let config = auth_config(dir.path(), &addr, &c.cert(Peer::Auth), "");
    let err = fails(&config, &[]);
    assert!(err.contains("auth.listen") && err.contains(&addr), "{err}");
}

#[test]
fn missing_section_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.toml");
    std::fs::write(&path, "").unwrap();
    let err = fails(&path, &[]);
    assert!(err.contains("`auth`") && err.contains("missing section"), "{err}");
}

#[test]
fn shipped_configurations_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    for file in ["dev.toml", "compose.toml"] {
        let config = ts_config::Config::load(Some(&root.join(file)), Vec::<(String, String)>::new())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(config.gateway.is_some() && config.auth.is_some() && config.upstreams.folders.is_some(), "{file}");
    }
}
