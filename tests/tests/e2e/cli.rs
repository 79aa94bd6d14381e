//! `teamshare-cli` driven as a subprocess through the sharing story, as a user at a terminal
//! and a script would: login by emailed code, a folder, a connection shared with its password
//! kept locally, an invitation accepted, each user's own credentials merged into a URI, a
//! removal refused with its reason; then the operator commands over mTLS.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use serde_json::Value;
use teamshare::Service;
use tokio::io::AsyncWriteExt;
use ts_contract::identity::Peer;
use ts_testkit::TestCluster;

/// The CLI binary next to this test binary (`cargo test --workspace` builds it).
pub(crate) fn cli_path() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(Path::parent).context("target directory")?;
    let bin = dir.join("teamshare-cli");
    anyhow::ensure!(bin.exists(), "{} is missing: cargo build -p ts-cli", bin.display());
    Ok(bin)
}

/// One user's terminal: their own config directory and credential passphrase.
struct Terminal {
    bin: PathBuf,
    home: tempfile::TempDir,
    endpoint: String,
    ca: PathBuf,
}

/// What one run printed.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> anyhow::Result<Value> {
        anyhow::ensure!(self.ok, "failed: {}", self.stderr);
        serde_json::from_str(&self.stdout).with_context(|| format!("not JSON: {}", self.stdout))
    }
}

impl Terminal {
    fn new(cluster: &TestCluster) -> anyhow::Result<Self> {
        Ok(Terminal {
            bin: cli_path()?,
            home: tempfile::tempdir()?,
            endpoint: format!("https://localhost:{}", cluster.addr(Service::Gateway).port()),
            ca: cluster.certs.ca_cert(),
        })
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Ran> {
        let mut child = tokio::process::Command::new(&self.bin)
            .args(args)
            .env_clear()
            .env("TEAMSHARE_CONFIG_DIR", self.home.path())
            .env("TEAMSHARE_CREDENTIAL_STORE", "file")
            .env("TEAMSHARE_CREDENTIALS_PASSPHRASE", "a long local passphrase")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut input = child.stdin.take().context("stdin")?;
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await?;
        }
        drop(input);
        let out = child.wait_with_output().await?;
        Ok(Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    async fn json(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.run(&all, stdin).await?.json()
    }

    /// Signs in as a script would: send the code, read it from the mail, complete.
    async fn login(&self, cluster: &TestCluster, email: &str) -> anyhow::Result<Value> {
        let ca = self.ca.to_string_lossy().into_owned();
        let sent = self
            .json(&["--endpoint", &self.endpoint, "--ca", &ca, "login", "--email", email, "--send-code"], None)
            .await?;
        assert_eq!(sent["sent"], true);
        let code = cluster.latest_code(email).context("code mailed")?;
        // The gateway and CA were remembered by the first run.
        self.json(&["login", "--email", email, "--code", &code], None).await
    }
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

#[tokio::test]
async fn the_cli_drives_the_sharing_story_and_keeps_passwords_on_each_machine() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let alice = Terminal::new(&cluster)?;
    let bob = Terminal::new(&cluster)?;
    assert_eq!(alice.login(&cluster, "alice@example.com").await?["email"], "alice@example.com");
    bob.login(&cluster, "bob@example.com").await?;

    let folder = alice.json(&["folders", "create", "Team databases"], None).await?;
    let folder_id = text(&folder["id"]);
    let shared = alice
        .json(
            &[
                "items",
                "share-connection",
                &folder_id,
                "Production",
                "--uri",
                "mongodb://alice@db1.internal:27017/admin",
                "--password-stdin",
            ],
            Some("alice-Pa55word\n"),
        )
        .await?;
    assert_eq!(shared["kept_locally"], serde_json::json!(["password"]));
    let item_id = text(&shared["item"]["summary"]["id"]);

    let invitation = alice.json(&["invitations", "send", &folder_id, "bob@example.com", "view"], None).await?;
    let mine = bob.json(&["invitations", "list"], None).await?;
    assert_eq!(mine[0]["id"], invitation["id"]);
    let joined = bob.json(&["invitations", "accept", &text(&invitation["id"])], None).await?;
    assert_eq!(joined["access"], "view");

    // Bob keeps his own credentials; each URI carries its user's own.
    let kept = bob
        .json(&["credentials", "set", &item_id, "--username", "bob", "--password-stdin"], Some("bob-Pa55word\n"))
        .await?;
    assert_eq!(kept["set"], serde_json::json!(["username", "password"]));
    assert_eq!(
        bob.json(&["uri", &folder_id, &item_id], None).await?["uri"],
        "mongodb://bob:bob-Pa55word@db1.internal:27017/admin"
    );
    assert_eq!(
        alice.json(&["uri", &folder_id, &item_id], None).await?["uri"],
        "mongodb://alice:alice-Pa55word@db1.internal:27017/admin"
    );
    let shown = bob.run(&["credentials", "show", &item_id], None).await?;
    assert!(shown.ok && shown.stdout.contains("username, password") && !shown.stdout.contains("bob-Pa55word"));

    // Human output: a table with headers.
    let listed = bob.run(&["items", "list", &folder_id], None).await?;
    assert!(listed.ok, "{}", listed.stderr);
    assert!(listed.stdout.starts_with("ID"), "{}", listed.stdout);
    assert!(listed.stdout.contains("Production") && listed.stdout.contains("connection"));
    let members = alice.json(&["members", "list", &folder_id], None).await?;
    assert_eq!(members.as_array().map(Vec::len), Some(2));

    // Removed (by email): Bob's next read fails with the reason, and a non-zero exit.
    alice.json(&["members", "remove", &folder_id, "bob@example.com"], None).await?;
    let refused = bob.run(&["items", "get", &folder_id, &item_id], None).await?;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("FOLDER_NOT_FOUND"), "{}", refused.stderr);
    let last = alice.run(&["folders", "leave", &folder_id], None).await?;
    assert!(!last.ok && last.stderr.contains("LAST_MANAGER"), "{}", last.stderr);
    let events = alice.json(&["audit", &folder_id], None).await?;
    assert!(events.as_array().is_some_and(|e| e.iter().any(|e| e["action"] == "member.remove")), "{events}");

    // Nothing secret on disk in the clear, and the session is the user's alone.
    for (t, secrets) in [(&alice, ["alice-Pa55word", ""]), (&bob, ["bob-Pa55word", ""])] {
        for entry in std::fs::read_dir(t.home.path())? {
            let path = entry?.path();
            let raw = std::fs::read_to_string(&path)?;
            assert!(!raw.contains(secrets[0]), "{} holds a password", path.display());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(t.home.path().join("session.json"))?.permissions().mode();
            assert_eq!(mode & 0o077, 0, "session.json is readable by others");
        }
    }
    assert!(alice.run(&["logout"], None).await?.ok);
    let after = alice.run(&["whoami"], None).await?;
    assert!(!after.ok && after.stderr.contains("not signed in"), "{}", after.stderr);
    cluster.stop().await
}

#[tokio::test]
async fn the_cli_exports_a_users_data_to_a_private_file_and_erases_the_account() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let carol = Terminal::new(&cluster)?;
    carol.login(&cluster, "carol@example.com").await?;
    let folder = carol.json(&["folders", "create", "Carol's queries"], None).await?;
    let folder_id = text(&folder["id"]);
    carol
        .json(
            &["items", "share-query", &folder_id, "Open orders", "--database", "shop", "--collection", "orders"],
            None,
        )
        .await?;

    // The export: one JSON document, in a directory made for it, readable by its owner only.
    let file = carol.home.path().join("exports/my-data.json");
    let summary = carol.json(&["privacy", "export", "--out", &file.to_string_lossy()], None).await?;
    assert_eq!((summary["memberships"].as_u64(), summary["items"].as_u64()), (Some(1), Some(1)), "{summary}");
    let export: Value = serde_json::from_slice(&std::fs::read(&file)?)?;
    assert_eq!(export["account"]["user"]["email"], "carol@example.com");
    assert_eq!(export["memberships"][0]["folder_id"], folder["id"]);
    assert_eq!(export["items"][0]["item"]["content"]["query"]["collection"], "orders");
    let sessions = export["sessions"].as_array().context("sessions")?;
    assert!(sessions.iter().any(|s| s["current"] == true), "{sessions:?}");
    assert_eq!(export["summary"]["items"], summary["items"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file)?.permissions().mode() & 0o777, 0o600);
    }

    // Erasure: a wrong confirmation is refused (non-zero exit, the reason); the right one erases
    // the account, deletes the folder only Carol was in, and signs out here.
    let wrong = carol.run(&["account", "delete", "--confirm", "someone@example.com"], None).await?;
    assert!(!wrong.ok && wrong.stderr.contains("INVALID_FIELD"), "{}", wrong.stderr);
    let erased = carol.json(&["account", "delete", "--confirm", "carol@example.com"], None).await?;
    assert!(text(&erased["pseudonym"]).starts_with("erased-"), "{erased}");
    assert_eq!(erased["deleted_folder_ids"], serde_json::json!([folder["id"]]));
    assert!(!carol.home.path().join("session.json").exists());
    let after = carol.run(&["whoami"], None).await?;
    assert!(!after.ok && after.stderr.contains("not signed in"), "{}", after.stderr);
    cluster.stop().await
}

#[tokio::test]
async fn operator_commands_run_over_mtls_with_the_operator_certificate() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = ts_testkit::Folders::new(&cluster.gateway().await?, &alice).create("Rotating").await?;
    let op = Terminal::new(&cluster)?;
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let (cert, key, ca) = (
        path(cluster.certs.cert(Peer::Operator)),
        path(cluster.certs.key(Peer::Operator)),
        path(cluster.certs.ca_cert()),
    );
    let url = |s: Service| format!("https://127.0.0.1:{}", cluster.addr(s).port());
    let (auth, folders, keyvault) = (url(Service::Auth), url(Service::Folders), url(Service::Keyvault));
    let operator = |args: &[&str]| {
        let mut all: Vec<String> = ["--json", "operator", "--cert", &cert, "--key", &key, "--internal-ca", &ca]
            .iter()
            .map(|s| s.to_string())
            .collect();
        all.extend(["--auth-url", &auth, "--folders-url", &folders, "--keyvault-url", &keyvault].map(String::from));
        all.extend(args.iter().map(|s| s.to_string()));
        all
    };
    let run = |args: Vec<String>| {
        let op = &op;
        async move { op.run(&args.iter().map(String::as_str).collect::<Vec<_>>(), None).await }
    };

    run(operator(&["license", "upsert", "acme", "--admin", "alice@example.com", "--domain", "example.com"]))
        .await?
        .json()?;
    let licenses = run(operator(&["license", "list"])).await?.json()?;
    assert_eq!(licenses[0]["license_id"], "acme");
    assert_eq!(licenses[0]["domains"], serde_json::json!(["example.com"]));
    assert_eq!(run(operator(&["sharing", "off", "--license", "acme"])).await?.json()?["enabled"], false);
    assert_eq!(run(operator(&["sharing", "get", "--license", "acme"])).await?.json()?["enabled"], false);
    assert_eq!(run(operator(&["sharing", "on", "--license", "acme"])).await?.json()?["enabled"], true);

    let rotated = run(operator(&["folder-key", "rotate", &folder_id])).await?.json()?;
    assert_eq!(rotated["key_version"], 2);

    // The master-key rewrap, one key per call, with progress on stderr.
    let servers = tokio::task::spawn_blocking(ts_testkit::shared).await??;
    let new_key = ts_testkit::create_kms_key(&ts_testkit::kms_client(servers.kms.port)).await?;
    let ran = run(operator(&["rewrap", "--kms-key", &new_key, "--batch", "1"])).await?;
    let report = ran.json()?;
    assert_eq!(report["remaining"], 0, "{report}");
    assert!(report["rewrapped"].as_u64().is_some_and(|n| n >= 1), "{report}");

    // Without the operator certificate the services refuse.
    let stranger = [
        "operator",
        "--cert",
        &path(cluster.certs.cert(Peer::Gateway)),
        "--key",
        &path(cluster.certs.key(Peer::Gateway)),
        "--internal-ca",
        &ca,
        "--auth-url",
        &auth,
        "license",
        "list",
    ];
    let refused = op.run(&stranger, None).await?;
    assert!(
        !refused.ok && refused.stderr.contains("PERMISSION_DENIED") || refused.stderr.contains("PermissionDenied"),
        "{}",
        refused.stderr
    );
    cluster.stop().await
}
