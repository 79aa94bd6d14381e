//! Operator commands: licenses, the Team Sharing switch, folder data-key rotation and
//! re-encryption, and the master key (its status, the rewrap, retiring the old key), each an
//! internal RPC over mTLS presenting the operator certificate. The internal services'
//! certificates name the service (`auth`, `folders`, `keyvault`), which is the TLS server name
//! used whatever the address.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use ts_config::Upstream;
use ts_proto::internal::folder_key_operator_service_client::FolderKeyOperatorServiceClient;
use ts_proto::internal::key_vault_operator_service_client::KeyVaultOperatorServiceClient;
use ts_proto::internal::license_operator_service_client::LicenseOperatorServiceClient;
use ts_proto::internal::privacy_operator_service_client::PrivacyOperatorServiceClient;
use ts_proto::internal::*;

use ts_runtime::client::InternalChannel;
use ts_runtime::tls::MtlsMaterial;

use crate::output::{Out, time};

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
    /// A person's data (GDPR): erasure on request, and the retention job (PRIVACY.md).
    #[command(subcommand)]
    Privacy(Privacy),
    /// The Team Sharing switch, for the deployment or one license.
    #[command(subcommand)]
    Sharing(Sharing),
    /// A folder's data key.
    #[command(subcommand)]
    FolderKey(FolderKey),
    /// The KMS master key: which key wraps the data keys, rewrapping them all under a new
    /// key, and retiring the old key so that deleted folders' keys in backups die with it.
    #[command(subcommand)]
    MasterKey(MasterKey),
    /// The same as `master-key rewrap` (kept for scripts written before it).
    #[command(hide = true)]
    Rewrap(Rewrap),
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
enum Privacy {
    /// Erase everything held about an email (a data-subject request), whether or not it has an
    /// account: the same erasure as a user's `account delete`. Safe to repeat; completes an
    /// erasure left unfinished.
    Erase {
        email: String,
        /// Where the person is the last manager of folders with other members, make each
        /// folder's longest-standing other member a manager instead of refusing.
        #[arg(long)]
        hand_over_management: bool,
    },
    /// Run the retention job now (auth also runs it every `retention.interval_secs`).
    Retention,
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

#[derive(Debug, Subcommand)]
enum MasterKey {
    /// Which KMS key new data keys are made under, how many data keys each KMS key wraps, and
    /// every old key's retirement.
    Status,
    /// Re-encrypt every data key under a new KMS key, batch by batch with progress. Resumable:
    /// run it again after an interruption.
    Rewrap(Rewrap),
    /// Do the next due step of retiring an old KMS key and say when the next one is due:
    /// disable it (once no data key is wrapped under it), then, once the backup retention
    /// window has passed, schedule its deletion. Safe to run daily (a CronJob) until it says
    /// nothing is left to do.
    Retire {
        /// The old KMS key id or ARN.
        #[arg(long, env = "TEAMSHARE_RETIRE_KMS_KEY", value_name = "KEY")]
        old: String,
        /// How long database backups are kept, in days.
        #[arg(long, env = "TEAMSHARE_BACKUP_RETENTION_DAYS", value_name = "DAYS")]
        backup_retention_days: u32,
        /// How long KMS waits before deleting the key once its deletion is scheduled (7 to 30
        /// days); until then the deletion can be cancelled in KMS.
        #[arg(long, env = "TEAMSHARE_KMS_DELETION_PENDING_DAYS", value_name = "DAYS", default_value_t = 30)]
        deletion_pending_days: u32,
    },
}

// `master-key rewrap` and the older `rewrap` (no doc comment: each variant's is its help).
#[derive(Debug, Args)]
struct Rewrap {
    /// The new KMS key id, ARN or alias.
    #[arg(long = "to", alias = "kms-key", value_name = "KEY")]
    to: String,
    /// Keys per call (progress is shown after each).
    #[arg(long, default_value_t = 100)]
    batch: u32,
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
        OperatorCommand::Privacy(p) => {
            let mut auth = PrivacyOperatorServiceClient::new(op.channel(&op.auth_url, "auth")?);
            match p {
                Privacy::Erase { email, hand_over_management } => {
                    let request =
                        EraseSubjectRequest { email: email.clone(), hand_over_management: *hand_over_management };
                    let r = auth.erase_subject(request).await.map_err(status)?.into_inner();
                    let v = json!({ "pseudonym": r.pseudonym, "had_account": r.had_account,
                        "deleted_folder_ids": r.deleted_folder_ids, "handed_over_folder_ids": r.handed_over_folder_ids,
                        "memberships_removed": r.memberships_removed, "invitations_removed": r.invitations_removed,
                        "license_lists": r.license_lists });
                    out.show(v, || {
                        let list = |ids: &[String]| if ids.is_empty() { "none".to_owned() } else { ids.join(", ") };
                        format!(
                            // Not the address: this output lands in job logs.
                            "erased ({}); now reads {}\n\
                             {} memberships, {} invitations removed; removed from {} license lists\n\
                             folders deleted: {}\n\
                             folders handed over: {}",
                            if r.had_account { "had an account" } else { "no account" },
                            r.pseudonym,
                            r.memberships_removed,
                            r.invitations_removed,
                            r.license_lists,
                            list(&r.deleted_folder_ids),
                            list(&r.handed_over_folder_ids)
                        )
                    });
                }
                Privacy::Retention => {
                    let r = auth.run_retention(RunRetentionRequest {}).await.map_err(status)?.into_inner();
                    let v = json!({ "codes": r.codes, "sessions": r.sessions, "invitations": r.invitations,
                        "audit_events": r.audit_events, "erasures_completed": r.erasures_completed });
                    out.show(v, || {
                        format!(
                            "removed {} expired codes, {} ended sessions, {} closed invitations, {} audit events; {} unfinished erasures completed",
                            r.codes, r.sessions, r.invitations, r.audit_events, r.erasures_completed
                        )
                    });
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
        OperatorCommand::Rewrap(r) | OperatorCommand::MasterKey(MasterKey::Rewrap(r)) => rewrap(&op, r, out).await?,
        OperatorCommand::MasterKey(MasterKey::Status) => master_key_status(&op, out).await?,
        OperatorCommand::MasterKey(MasterKey::Retire { old, backup_retention_days, deletion_pending_days }) => {
            let request = RetireMasterKeyRequest {
                old_kms_key_id: old.clone(),
                backup_retention_days: *backup_retention_days,
                deletion_pending_days: *deletion_pending_days,
            };
            retire(&op, request, out).await?;
        }
    }
    Ok(())
}

/// `master-key rewrap`: RewrapAll `--batch` keys at a time until none remain, with progress
/// on stderr after each batch (so a CronJob's log shows it too); the result on stdout.
async fn rewrap(op: &Operator, args: &Rewrap, out: &Out) -> anyhow::Result<()> {
    let mut keyvault = KeyVaultOperatorServiceClient::new(op.channel(&op.keyvault_url, "keyvault")?);
    let (mut rewrapped, mut already_done, mut last_remaining) = (0u64, None, u64::MAX);
    loop {
        let request = RewrapAllRequest { new_kms_key_id: args.to.clone(), limit: args.batch.max(1) };
        let r = keyvault.rewrap_all(request).await.map_err(status)?.into_inner();
        rewrapped += r.rewrapped;
        let before = *already_done.get_or_insert(r.already_done);
        eprintln!("rewrapped {rewrapped} of {}; {} remaining", rewrapped + r.remaining, r.remaining);
        // Done, stuck, or racing another rewrap to another key (remaining never falls).
        let stalled = r.remaining >= last_remaining;
        last_remaining = r.remaining;
        if r.remaining == 0 || r.rewrapped == 0 || stalled {
            out.show(json!({ "rewrapped": rewrapped, "already_done": before, "remaining": r.remaining }), || {
                let mut text = format!(
                    "{rewrapped} data keys rewrapped, {before} were already under the new key, {} remaining",
                    r.remaining
                );
                if r.remaining == 0 {
                    text.push_str(
                        "\nnext, to make deleted folders unreadable in backups too: \
                         master-key retire --old <the previous key> --backup-retention-days <days>",
                    );
                }
                text
            });
            if r.remaining > 0 {
                anyhow::bail!("{} data keys could not be rewrapped; see keyvault's logs and run again", r.remaining);
            }
            return Ok(());
        }
    }
}

/// A retirement as JSON; times in RFC 3339, empty when not (yet) set.
fn retirement_json(r: &MasterKeyRetirement) -> serde_json::Value {
    json!({ "kms_key_id": r.kms_key_id, "disabled_at": time(&r.disabled_at),
        "backup_retention_days": r.backup_retention_days, "deletion_scheduled_at": time(&r.deletion_scheduled_at),
        "kms_deletion_date": time(&r.kms_deletion_date) })
}

/// When a disabled key's deletion falls due: its retention window after it was disabled.
fn deletion_due(r: &MasterKeyRetirement) -> String {
    let due = r.disabled_at.as_ref().map(|t| prost_types::Timestamp {
        seconds: t.seconds.saturating_add(i64::from(r.backup_retention_days) * 24 * 60 * 60),
        nanos: t.nanos,
    });
    time(&due)
}

/// `master-key status`.
async fn master_key_status(op: &Operator, out: &Out) -> anyhow::Result<()> {
    let mut keyvault = KeyVaultOperatorServiceClient::new(op.channel(&op.keyvault_url, "keyvault")?);
    let r = keyvault.get_master_key_status(GetMasterKeyStatusRequest {}).await.map_err(status)?.into_inner();
    let wrapped: Vec<serde_json::Value> =
        r.wrapped_data_keys.iter().map(|w| json!({ "kms_key_id": w.kms_key_id, "data_keys": w.data_keys })).collect();
    let v = json!({ "current_kms_key_id": r.current_kms_key_id, "configured_kms_key_id": r.configured_kms_key_id,
        "wrapped_data_keys": wrapped, "retirements": r.retirements.iter().map(retirement_json).collect::<Vec<_>>() });
    out.show(v, || {
        let mut lines = vec![format!("current master key: {}", r.current_kms_key_id)];
        // The configured id may be the current key's bare id, which KMS spells as an ARN.
        let same = r.configured_kms_key_id == r.current_kms_key_id
            || r.current_kms_key_id.ends_with(&format!(":key/{}", r.configured_kms_key_id));
        if !same {
            lines.push(format!("configured kms.key_id: {} (a rewrap's key takes precedence)", r.configured_kms_key_id));
        }
        lines.push("data keys by KMS key:".into());
        if r.wrapped_data_keys.is_empty() {
            lines.push("  none".into());
        }
        for w in &r.wrapped_data_keys {
            let current = if w.kms_key_id == r.current_kms_key_id { "  (current)" } else { "" };
            lines.push(format!("  {:>10}  {}{current}", w.data_keys, w.kms_key_id));
        }
        lines.push("retired keys:".into());
        if r.retirements.is_empty() {
            lines.push("  none".into());
        }
        for t in &r.retirements {
            let next = if t.deletion_scheduled_at.is_some() {
                format!(
                    "deletion scheduled {}, KMS deletes it {}",
                    time(&t.deletion_scheduled_at),
                    time(&t.kms_deletion_date)
                )
            } else {
                format!("deletion due from {}", deletion_due(t))
            };
            lines.push(format!("  {}: disabled {}; {next}", t.kms_key_id, time(&t.disabled_at)));
        }
        lines.join("\n")
    });
    Ok(())
}

/// `master-key retire`: one step, then what was done and when the next is due.
async fn retire(op: &Operator, request: RetireMasterKeyRequest, out: &Out) -> anyhow::Result<()> {
    let mut keyvault = KeyVaultOperatorServiceClient::new(op.channel(&op.keyvault_url, "keyvault")?);
    let r = keyvault.retire_master_key(request).await.map_err(status)?.into_inner();
    let step = MasterKeyRetirementStep::try_from(r.step).unwrap_or(MasterKeyRetirementStep::Unspecified);
    let step_name = step.as_str_name().trim_start_matches("MASTER_KEY_RETIREMENT_STEP_").to_lowercase();
    let retirement = r.retirement.clone().unwrap_or_default();
    let v = json!({ "kms_key_id": r.kms_key_id, "step": step_name, "kms_key_state": r.kms_key_state,
        "next_step_at": time(&r.next_step_at), "retirement": retirement_json(&retirement) });
    out.show(v, || {
        let (key, days) = (&r.kms_key_id, retirement.backup_retention_days);
        let deletes = time(&retirement.kms_deletion_date);
        match step {
            MasterKeyRetirementStep::Disabled => format!(
                "disabled {key} in KMS; its deletion falls due at {} (after the {days}-day backup retention \
                 window): run this again then",
                time(&r.next_step_at)
            ),
            MasterKeyRetirementStep::Waiting => format!(
                "{key} is disabled since {}; nothing to do until {}, when the {days}-day backup retention \
                 window has passed",
                time(&retirement.disabled_at),
                time(&r.next_step_at)
            ),
            MasterKeyRetirementStep::DeletionScheduled => format!(
                "scheduled the deletion of {key}: KMS deletes it at {deletes}, and with it every data key wrapped \
                 under it in any backup; nothing is left to do"
            ),
            MasterKeyRetirementStep::Done if r.kms_key_state.is_empty() => {
                format!("{key} is deleted from KMS; nothing is left to do")
            }
            MasterKeyRetirementStep::Done => {
                format!("{key} is pending deletion: KMS deletes it at {deletes}; nothing is left to do")
            }
            MasterKeyRetirementStep::Unspecified => format!("{key}: {}", r.kms_key_state),
        }
    });
    Ok(())
}
