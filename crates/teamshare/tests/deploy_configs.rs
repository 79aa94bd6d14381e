//! The configurations we ship load: the Kubernetes base with each overlay's `teamshare.env`,
//! the otel-collector component's overrides and stand-ins for the Secrets' keys, and the
//! compose and development files. A key renamed in `ts-config` but not in a deployment file
//! fails here, not when a pod starts.

use std::path::{Path, PathBuf};

use ts_config::{Config, KmsProvider, LogFormat, MailConfig};

const SERVICES: [&str; 4] = ["auth", "keyvault", "folders", "invitations"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `KEY=VALUE` lines of a kustomize env file; comments and blank lines skipped, values
/// verbatim (kustomize does not unquote them either).
fn env_file(path: &Path) -> Vec<(String, String)> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{}: not KEY=VALUE: {l}", path.display()));
            (k.trim().to_owned(), v.to_owned())
        })
        .collect()
}

/// The `TS_` variables that a JSON patch of container env adds: each `name: TS_…` line and the
/// `value:` line after it.
fn env_patch(path: &Path) -> Vec<(String, String)> {
    let text = read(path);
    let mut lines = text.lines().map(str::trim);
    let mut vars = Vec::new();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("name: ").filter(|n| n.starts_with("TS_")) else { continue };
        let value = lines
            .next()
            .and_then(|l| l.strip_prefix("value: "))
            .unwrap_or_else(|| panic!("{}: {name} has no value line after it", path.display()));
        vars.push((name.to_owned(), value.to_owned()));
    }
    vars
}

/// What the Secrets put in every pod's environment; stand-ins of the right shape.
fn secrets() -> Vec<(String, String)> {
    [
        ("TS_MONGODB__URI", "mongodb+srv://teamshare:secret@cluster0.example.mongodb.net/?tls=true"),
        ("TS_REDIS__URL", "rediss://:secret@redis.example.internal:6379"),
        ("TS_MAIL__USERNAME", "AKIAEXAMPLE"),
        ("TS_MAIL__PASSWORD", "secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn load(path: &Path, env: &[(String, String)]) -> Config {
    Config::load(Some(path), env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()))
}

/// Every service section and every upstream is there.
fn assert_complete(name: &str, config: &Config) {
    for (section, present) in [
        ("internal_tls", config.internal_tls.is_some()),
        ("mongodb", config.mongodb.is_some()),
        ("redis", config.redis.is_some()),
        ("kms", config.kms.is_some()),
        ("mail", config.mail.is_some()),
        ("auth", config.auth.is_some()),
        ("keyvault", config.keyvault.is_some()),
        ("folders", config.folders.is_some()),
        ("invitations", config.invitations.is_some()),
        ("gateway", config.gateway.is_some()),
    ] {
        assert!(present, "{name}: no [{section}]");
    }
    for service in SERVICES {
        let upstream = config.upstreams.get(service).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(upstream.url.starts_with("https://"), "{name}: upstreams.{service} is not https: {}", upstream.url);
    }
    assert!(!config.accounts.token_signing_keys.is_empty(), "{name}: no accounts.token_signing_keys");
    assert!(config.accounts.secret_key_file.is_some(), "{name}: no accounts.secret_key_file");
}

#[test]
fn the_kubernetes_base_loads_with_each_overlay() {
    let k8s = repo().join("k8s");
    let base = k8s.join("base/teamshare.toml");
    let telemetry = env_patch(&k8s.join("components/otel-collector/telemetry-env.yaml"));
    assert_eq!(telemetry.len(), 2, "{telemetry:?}");
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(k8s.join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().path().join("teamshare.env"))
        .filter(|p| p.is_file())
        .collect();
    overlays.sort();
    assert!(overlays.len() >= 2, "overlays with a teamshare.env: {overlays:?}");

    for overlay in &overlays {
        let name = overlay.display().to_string();
        let overrides = env_file(overlay);
        let env: Vec<_> = overrides.iter().chain(&telemetry).cloned().chain(secrets()).collect();
        let config = load(&base, &env);

        assert!(config.production, "{name}: production is not true");
        assert_complete(&name, &config);
        for service in SERVICES {
            let upstream = config.upstreams.get(service).unwrap();
            assert_eq!(upstream.server_name.as_deref(), Some(service), "{name}: upstreams.{service}.server_name");
        }

        // What the overlay sets arrives where it belongs.
        let set = |key: &str| overrides.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let kms = config.kms.as_ref().unwrap();
        assert_eq!(kms.provider, KmsProvider::Aws, "{name}");
        assert_eq!(kms.key_id.as_deref(), set("TS_KMS__KEY_ID"), "{name}: kms.key_id");
        assert_eq!(kms.region.as_deref(), set("TS_KMS__REGION"), "{name}: kms.region");
        assert!(kms.key_id.is_some() && kms.region.is_some(), "{name}: the overlay sets the KMS key and region");
        match config.mail.as_ref().unwrap() {
            MailConfig::Smtp { host, from, username, password, .. } => {
                assert_eq!(Some(host.as_str()), set("TS_MAIL__HOST"), "{name}: mail.host");
                assert_eq!(Some(from.as_str()), set("TS_MAIL__FROM"), "{name}: mail.from");
                assert!(username.is_some() && password.is_some(), "{name}: the SMTP login from the Secret");
            }
            MailConfig::File { .. } => panic!("{name}: the file mailer in production"),
        }

        let t = &config.telemetry;
        assert_eq!(t.log_format, LogFormat::Json, "{name}");
        assert!(t.otlp_endpoint.as_deref().is_some_and(|e| e.starts_with("https://")), "{name}: {t:?}");
        // The collector's certificate is checked; no client certificate (read once, it would
        // expire under a long-lived pod).
        assert!(t.otlp_ca_cert.is_some() && t.otlp_cert.is_none() && t.otlp_key.is_none(), "{name}: {t:?}");
    }
}

#[test]
fn the_compose_and_development_files_load() {
    for file in ["deploy/compose.toml", "deploy/dev.toml"] {
        let path = repo().join(file);
        let config = load(&path, &[]);
        assert_complete(file, &config);
        // Local KMS and the file mailer: development only, which production = true refuses.
        assert!(!config.production, "{file}: production");
        assert_eq!(config.kms.as_ref().unwrap().provider, KmsProvider::Local, "{file}");
        assert!(matches!(config.mail, Some(MailConfig::File { .. })), "{file}");
        // Relative paths are taken from the file's directory.
        let ca = &config.internal_tls.as_ref().unwrap().ca_cert;
        assert!(ca.is_absolute(), "{file}: internal_tls.ca_cert {}", ca.display());
    }
}
