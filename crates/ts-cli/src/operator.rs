//! Operator commands: licenses, the Team Sharing switch, folder data-key rotation and
//! re-encryption, and the master-key rewrap, each an internal RPC over mTLS presenting the
//! operator certificate. The internal services' certificates name the service (`auth`,
//! `folders`, `keyvault`), which is the TLS server name used whatever the address.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use ts_config::Upstream;
use ts_proto::internal::folder_key_operator_service_client::FolderKeyOperatorServiceClient;
use ts_proto::internal::key_vault_operator_service_client::KeyVaultOperatorServiceClient;
use ts_proto::internal::license_operator_service_client::LicenseOperatorServiceClient;
use ts_proto::internal::*;

use ts_runtime::client::InternalChannel;
use ts_runtime::tls::MtlsMaterial;

use crate::output::Out;

/// `operator`: the mTLS identity and where the internal services are.
#[derive(Debug, Args)]
pub struct Operator {
    /// The operator certificate (PEM).
    #[arg(long, env = "TEAMSHARE_OPERATOR_CERT")]
    cert: PathBuf,
    /// The operator certificate's private key (PEM).
    #[arg(long, env = "TEAMSHARE_OPERATOR_KEY")]
    key: PathBuf,
    /// The internal CA bundle (PEM).
    #[arg(long = "internal-ca", env = "TEAMSHARE_OPERATOR_CA")]
    ca: PathBuf,
    /// The auth service.
    #[arg(long, env = "TEAMSHARE_AUTH_URL", default_value = "https://127.0.0.1:7101")]
    auth_url: String,
    /// The keyvault service.
    #[arg(long, env = "TEAMSHARE_KEYVAULT_URL", default_value = "https://127.0.0.1:7102")]
    keyvault_url: String,
    /// The folders service.
    #[arg(long, env = "TEAMSHARE_FOLDERS_URL", default_value = "https://127.0.0.1:7103")]
    folders_url: String,
    #[command(subcommand)]
    command: OperatorCommand,
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Licenses.
    #[command(subcommand)]
    License(License),
    /// The Team Sharing switch, for the deployment or one license.
    #[command(subcommand)]
    Sharing(Sharing),
    /// A folder's data key.
    #[command(subcommand)]
    FolderKey(FolderKey),
    /// Re-encrypts every data key under a new KMS master key, batch by batch with progress.
    /// Resumable: run it again after an interruption.
    Rewrap {
        /// The new KMS key id, ARN or alias.
        #[arg(long)]
        kms_key: String,
        /// Keys per call (progress is shown after each).
        #[arg(long, default_value_t = 100)]
        batch: u32,
    },
}

#[derive(Debug, Subcommand)]
enum License {
    /// Create or replace a license.
    Upsert {
        license_id: String,
        /// An admin email (repeat for more).
        #[arg(long = "admin")]
        admins: Vec<String>,
        /// A member email (repeat for more).
        #[arg(long = "email")]
        emails: Vec<String>,
        /// A member domain (repeat for more).
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
    /// List every license.
    List,
}

#[derive(Debug, Subcommand)]
enum Sharing {
    /// Whether Team Sharing is on.
    Get(Scope),
    /// Switch Team Sharing on.
    On(Scope),
    /// Switch Team Sharing off (nothing stored is lost).
    Off(Scope),
}

#[derive(Debug, Args)]
struct Scope {
    /// The license; the whole deployment without it.
    #[arg(long)]
    license: Option<String>,
}

#[derive(Debug, Subcommand)]
enum FolderKey {
    /// Add a new data-key version, re-encrypt every item to it, retire the old ones.
    Rotate { folder_id: String },
    /// Finish re-encrypting a folder's items to its newest key (safe to repeat).
    Reencrypt { folder_id: String },
}

impl Operator {
    /// An mTLS channel to an internal service, built as the services build theirs
    /// (`ts_runtime`): the operator identity, the internal CA, the service's name as the
    /// expected TLS name.
    fn channel(&self, url: &str, service: &str) -> anyhow::Result<InternalChannel> {
        let material = MtlsMaterial::load(
            ("--internal-ca", self.ca.as_path()),
            ("--cert", self.cert.as_path()),
            ("--key", self.key.as_path()),
        )?;
        let upstream = Upstream { url: url.to_owned(), server_name: None };
        let settings =
            ts_runtime::client::Settings { timeout: Duration::from_secs(600), refresh: Duration::from_secs(60) };
        Ok(ts_runtime::client::connect(service, &upstream, &material, settings)?)
    }
}

fn status(e: tonic::Status) -> anyhow::Error {
    ts_client::Error::from(e).into()
}

/// Runs one operator command.
pub async fn run(op: Operator, out: &Out) -> anyhow::Result<()> {
    match &op.command {
        OperatorCommand::License(l) => {
            let mut auth = LicenseOperatorServiceClient::new(op.channel(&op.auth_url, "auth")?);
            match l {
                License::Upsert { license_id, admins, emails, domains } => {
                    let request = UpsertLicenseRequest {
                        license_id: license_id.clone(),
                        admin_emails: admins.clone(),
                        emails: emails.clone(),
                        domains: domains.clone(),
                    };
                    auth.upsert_license(request).await.map_err(status)?;
                    out.show(json!({ "upserted": license_id }), || format!("license {license_id} saved"));
                }
                License::List => {
                    let mut rows = Vec::new();
                    let mut page_token = String::new();
                    loop {
                        let r = auth
                            .list_licenses(ListLicensesRequest { page_size: 500, page_token })
                            .await
                            .map_err(status)?
                            .into_inner();
                        for l in r.licenses {
                            let v = json!({ "license_id": l.license_id, "admin_emails": l.admin_emails, "emails": l.emails,
                                "domains": l.domains, "sharing_enabled": l.sharing_enabled, "blocked": l.blocked });
                            let state = match (l.sharing_enabled, l.blocked) {
                                (false, _) => "off",
                                (true, true) => "blocked by admin",
                                (true, false) => "on",
                            };
                            let cells = vec![
                                l.license_id,
                                l.admin_emails.join(","),
                                format!("{} emails, {} domains", l.emails.len(), l.domains.len()),
                                state.into(),
                            ];
                            rows.push((v, cells));
                        }
                        if r.next_page_token.is_empty() {
                            break;
                        }
                        page_token = r.next_page_token;
                    }
                    out.table(&["license", "admins", "members", "sharing"], rows);
                }
            }
        }
        OperatorCommand::Sharing(s) => {
            let mut auth = LicenseOperatorServiceClient::new(op.channel(&op.auth_url, "auth")?);
            let (scope, set) = match s {
                Sharing::Get(scope) => (scope, None),
                Sharing::On(scope) => (scope, Some(true)),
                Sharing::Off(scope) => (scope, Some(false)),
            };
            let license_id = scope.license.clone().unwrap_or_default();
            if let Some(enabled) = set {
                let request = SetSharingEnabledRequest { license_id: license_id.clone(), enabled };
                auth.set_sharing_enabled(request).await.map_err(status)?;
            }
            let enabled = auth
                .get_sharing_enabled(GetSharingEnabledRequest { license_id: license_id.clone() })
                .await
                .map_err(status)?
                .into_inner()
                .enabled;
            let scope_name =
                if license_id.is_empty() { "the deployment".to_owned() } else { format!("license {license_id}") };
            out.show(json!({ "license_id": license_id, "enabled": enabled }), || {
                format!("team sharing is {} for {scope_name}", if enabled { "on" } else { "off" })
            });
        }
        OperatorCommand::FolderKey(k) => {
            let mut folders = FolderKeyOperatorServiceClient::new(op.channel(&op.folders_url, "folders")?);
            let (key_version, reencrypted, retired) = match k {
                FolderKey::Rotate { folder_id } => {
                    let r = folders
                        .rotate_folder_key(RotateFolderKeyRequest { folder_id: folder_id.clone() })
                        .await
                        .map_err(status)?
                        .into_inner();
                    (r.key_version, r.reencrypted_items, r.retired_versions)
                }
                FolderKey::Reencrypt { folder_id } => {
                    let r = folders
                        .reencrypt_folder(ReencryptFolderRequest { folder_id: folder_id.clone() })
                        .await
                        .map_err(status)?
                        .into_inner();
                    (r.key_version, r.reencrypted_items, r.retired_versions)
                }
            };
            let v =
                json!({ "key_version": key_version, "reencrypted_items": reencrypted, "retired_versions": retired });
            out.show(v, || {
                format!("key version {key_version}: {reencrypted} items re-encrypted, {retired} old versions retired")
            });
        }
        OperatorCommand::Rewrap { kms_key, batch } => {
            let mut keyvault = KeyVaultOperatorServiceClient::new(op.channel(&op.keyvault_url, "keyvault")?);
            let (mut rewrapped, mut already_done, mut last_remaining) = (0u64, None, u64::MAX);
            loop {
                let request = RewrapAllRequest { new_kms_key_id: kms_key.clone(), limit: (*batch).max(1) };
                let r = keyvault.rewrap_all(request).await.map_err(status)?.into_inner();
                rewrapped += r.rewrapped;
                let before = *already_done.get_or_insert(r.already_done);
                if !out.json {
                    eprintln!("rewrapped {rewrapped} of {}; {} remaining", rewrapped + r.remaining, r.remaining);
                }
                // Done, stuck, or racing another rewrap to another key (remaining never falls).
                let stalled = r.remaining >= last_remaining;
                last_remaining = r.remaining;
                if r.remaining == 0 || r.rewrapped == 0 || stalled {
                    out.show(json!({ "rewrapped": rewrapped, "already_done": before, "remaining": r.remaining }), || {
                        format!("{rewrapped} data keys rewrapped, {before} were already under the new key, {} remaining", r.remaining)
                    });
                    if r.remaining > 0 {
                        anyhow::bail!(
                            "{} data keys could not be rewrapped; see keyvault's logs and run again",
                            r.remaining
                        );
                    }
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
