//! User commands, through the public API with the Rust SDK. The session lives in the config
//! directory (`session.json`, mode 0600), the gateway and CA chosen at login in
//! `settings.json`, and connection credentials in the OS keychain or an encrypted file.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use ts_client::proto::{self, item_content};
use ts_client::{
    AccessLevel, Client, ClientConfig, ConnectionInput, CredentialStore, EncryptedFileStore, ExportDocument,
    ExportPart, FileSessionStore, LocalCredentials,
};

use crate::output::{self, Out, Progress};

/// The options every user command shares.
#[derive(Debug)]
pub struct Globals {
    pub endpoint: Option<String>,
    pub ca: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
    pub credential_store: Option<String>,
}

/// `login`.
#[derive(Debug, Args)]
pub struct Login {
    /// Your email.
    #[arg(long)]
    email: Option<String>,
    /// The code from the email. Without it a code is sent and read from standard input.
    #[arg(long)]
    code: Option<String>,
    /// Only send the code; a script then runs `login --email E --code C`.
    #[arg(long)]
    send_code: bool,
    /// Sign in with an SSO id token read from standard input instead.
    #[arg(long, conflicts_with_all = ["email", "code", "send_code"])]
    sso_token_stdin: bool,
}

/// An access level.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Level {
    View,
    Edit,
    Manage,
}

impl From<Level> for AccessLevel {
    fn from(l: Level) -> Self {
        match l {
            Level::View => AccessLevel::View,
            Level::Edit => AccessLevel::Edit,
            Level::Manage => AccessLevel::Manage,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Folders {
    /// List your folders.
    List,
    /// Create a folder; you get MANAGE.
    Create { name: String },
    /// Rename a folder (MANAGE).
    Rename { folder_id: String, name: String },
    /// Delete a folder with its items and keys (MANAGE).
    Delete { folder_id: String },
    /// Leave a folder.
    Leave { folder_id: String },
}

#[derive(Debug, Subcommand)]
pub enum Members {
    /// List a folder's members.
    List { folder_id: String },
    /// Set a member's access (MANAGE); the member by user id or email.
    Set { folder_id: String, member: String, level: Level },
    /// Remove a member (MANAGE); the member by user id or email.
    Remove { folder_id: String, member: String },
}

#[derive(Debug, Subcommand)]
pub enum Items {
    /// List a folder's items.
    List { folder_id: String },
    /// Show one item with its content.
    Get { folder_id: String, item_id: String },
    /// Share a MongoDB connection. Its password and other secrets stay on this machine.
    ShareConnection(ShareConnection),
    /// Share a find query.
    ShareQuery(ShareQuery),
    /// Change an item's name or description (EDIT).
    Update {
        folder_id: String,
        item_id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete an item (EDIT).
    Delete { folder_id: String, item_id: String },
    /// Move an item to another folder you may edit.
    Move { folder_id: String, item_id: String, target_folder_id: String },
}

/// `items share-connection`.
#[derive(Debug, Args)]
pub struct ShareConnection {
    folder_id: String,
    name: String,
    /// The connection string, without a password (command lines are visible to other users
    /// of the machine): give the password with --password-stdin, or the whole string with
    /// --uri-stdin.
    #[arg(long, required_unless_present = "uri_stdin", conflicts_with = "uri_stdin")]
    uri: Option<String>,
    /// Read the connection string from standard input (its password is kept locally, never
    /// sent); before the password when --password-stdin is given too.
    #[arg(long)]
    uri_stdin: bool,
    #[arg(long, default_value = "")]
    description: String,
    /// SSH tunnel host as host:port.
    #[arg(long)]
    ssh_host: Option<String>,
    /// SSH tunnel user name.
    #[arg(long)]
    ssh_username: Option<String>,
    /// Read your database password from standard input (kept locally).
    #[arg(long)]
    password_stdin: bool,
}

/// `items share-query`.
#[derive(Debug, Args)]
pub struct ShareQuery {
    folder_id: String,
    name: String,
    #[arg(long)]
    database: String,
    #[arg(long)]
    collection: String,
    /// Filter as extended JSON.
    #[arg(long, default_value = "{}")]
    filter: String,
    #[arg(long, default_value = "")]
    projection: String,
    #[arg(long, default_value = "")]
    sort: String,
    #[arg(long, default_value_t = 0)]
    limit: u32,
    #[arg(long, default_value = "")]
    description: String,
}

#[derive(Debug, Subcommand)]
pub enum Invitations {
    /// List invitations sent to you, or a folder's pending invitations with --folder.
    List {
        #[arg(long)]
        folder: Option<String>,
    },
    /// Invite an email to a folder (MANAGE).
    Send { folder_id: String, email: String, level: Level },
    /// Accept an invitation sent to you.
    Accept { invitation_id: String },
    /// Decline an invitation sent to you.
    Decline { invitation_id: String },
    /// Revoke a pending invitation (MANAGE).
    Revoke { invitation_id: String },
    /// Send a pending invitation's email again (MANAGE).
    Resend { invitation_id: String },
}

#[derive(Debug, Subcommand)]
pub enum Credentials {
    /// Keep your own credentials for a shared connection (merged over what is kept).
    Set {
        item_id: String,
        #[arg(long)]
        username: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        ssh_username: Option<String>,
        /// Read the SSH password from standard input.
        #[arg(long, conflicts_with = "password_stdin")]
        ssh_password_stdin: bool,
        /// The SSH private key file (its path is kept, not its content).
        #[arg(long)]
        ssh_key_file: Option<PathBuf>,
    },
    /// Which credentials are kept for a connection (never their values).
    Show { item_id: String },
    /// Forget the credentials kept for a connection.
    Forget { item_id: String },
}

#[derive(Debug, Subcommand)]
pub enum Privacy {
    /// Export everything held about you (account, memberships, invitations, items you shared
    /// or last edited, sessions, audit events where you are the actor) as one JSON file,
    /// readable by you only. Progress goes to standard error.
    Export {
        /// The file to write (written whole or not at all, mode 0600: it holds personal data).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum Account {
    /// Erase your account: every session ends; your account, memberships and invitations are
    /// removed; your email is replaced by a pseudonym where it remains (items you shared or
    /// edited, folders you created, invitations you sent, audit events); folders where you are
    /// the only member are deleted with their keys. Refused while you are the last manager of
    /// a folder that has other members. Signs you out here.
    Delete {
        /// Your email, typed again.
        #[arg(long)]
        confirm: String,
    },
}

/// Settings remembered at login.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Settings {
    endpoint: Option<String>,
    ca: Option<PathBuf>,
}

/// Where things are and how to reach the gateway, for one command.
pub struct Context {
    dir: PathBuf,
    endpoint: String,
    ca: Option<PathBuf>,
    store_kind: String,
}

/// One line of standard input: a secret, so not echoed when it is typed at a terminal.
fn read_secret_line() -> anyhow::Result<String> {
    let line = if std::io::stdin().is_terminal() {
        rpassword::read_password().context("reading from the terminal")?
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading standard input")?;
        line
    };
    let secret = line.trim_end_matches(['\r', '\n']).to_owned();
    if secret.is_empty() {
        bail!("standard input was empty");
    }
    Ok(secret)
}

impl Context {
    /// The context of a user command from the shared options and the remembered settings.
    pub fn new(g: &Globals) -> anyhow::Result<Self> {
        let dir = match &g.config_dir {
            Some(d) => d.clone(),
            None => dirs::config_dir().context("no config directory; pass --config-dir")?.join("teamshare"),
        };
        let settings: Settings = match std::fs::read(dir.join("settings.json")) {
            Ok(b) => serde_json::from_slice(&b).context("settings.json")?,
            Err(_) => Settings::default(),
        };
        let endpoint = g.endpoint.clone().or(settings.endpoint).unwrap_or_else(|| "https://localhost:8443".into());
        let ca = g.ca.clone().or(settings.ca);
        let default_store = if cfg!(any(target_os = "macos", target_os = "windows")) { "keyring" } else { "file" };
        let store_kind = g.credential_store.clone().unwrap_or_else(|| default_store.into());
        Ok(Context { dir, endpoint, ca, store_kind })
    }

    fn client(&self) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new(self.endpoint.clone());
        if let Some(ca) = &self.ca {
            config.ca_pem = Some(std::fs::read(ca).with_context(|| format!("reading the CA {}", ca.display()))?);
        }
        let sessions = Arc::new(FileSessionStore::new(self.dir.join("session.json")));
        Ok(Client::connect(config, sessions)?)
    }

    fn credential_store(&self) -> anyhow::Result<Arc<dyn CredentialStore>> {
        match self.store_kind.as_str() {
            "file" => {
                let passphrase = std::env::var("TEAMSHARE_CREDENTIALS_PASSPHRASE")
                    .context("set TEAMSHARE_CREDENTIALS_PASSPHRASE to open the encrypted credential file")?;
                Ok(Arc::new(EncryptedFileStore::new(self.dir.join("credentials.json"), &passphrase)?))
            }
            #[cfg(feature = "keyring")]
            "keyring" => Ok(Arc::new(ts_client::KeyringStore::open("teamshare")?)),
            other => bail!("--credential-store must be `file` or `keyring`, not {other:?}"),
        }
    }

    fn client_with_credentials(&self) -> anyhow::Result<Client> {
        Ok(self.client()?.with_credentials(self.credential_store()?))
    }

    fn remember(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let settings = Settings { endpoint: Some(self.endpoint.clone()), ca: self.ca.clone() };
        std::fs::write(self.dir.join("settings.json"), serde_json::to_vec_pretty(&settings)?)?;
        Ok(())
    }

    pub async fn login(&self, login: &Login, out: &Out) -> anyhow::Result<()> {
        let client = self.client()?;
        // The gateway and CA of a login are those of the next commands (also when this run
        // only sends the code).
        self.remember()?;
        let user = if login.sso_token_stdin {
            client.sign_in_with_sso(&read_secret_line()?).await?
        } else {
            let email = login.email.as_deref().context("--email is required")?;
            let code = match &login.code {
                Some(code) => code.clone(),
                None => {
                    client.start_email_sign_in(email).await?;
                    if login.send_code {
                        out.show(json!({ "sent": true, "email": email }), || format!("a code was sent to {email}"));
                        return Ok(());
                    }
                    eprint!("code sent to {email}; enter it: ");
                    read_secret_line()?
                }
            };
            client.complete_email_sign_in(email, code.trim()).await?
        };
        out.show(output::user(&user), || format!("signed in as {} ({})", user.email, user.id));
        Ok(())
    }

    pub async fn logout(&self, out: &Out) -> anyhow::Result<()> {
        self.client()?.sign_out().await?;
        out.show(json!({ "signed_out": true }), || "signed out".into());
        Ok(())
    }

    pub async fn whoami(&self, out: &Out) -> anyhow::Result<()> {
        let me = self.client()?.me().await?;
        out.show(output::user(&me), || {
            let sharing = if me.sharing_allowed { "sharing allowed" } else { "sharing not allowed" };
            format!("{} ({}), license {:?}, {sharing}", me.email, me.id, me.license_id)
        });
        Ok(())
    }

    pub async fn folders(&self, c: &Folders, out: &Out) -> anyhow::Result<()> {
        let client = self.client()?;
        match c {
            Folders::List => {
                let rows = collect(client.folders(), "folders", output::folder).await?;
                out.table(&["id", "name", "access", "created by"], rows);
            }
            Folders::Create { name } => {
                let f = client.create_folder(name).await?;
                out.show(output::folder(&f).0, || format!("created folder {} ({})", f.name, f.id));
            }
            Folders::Rename { folder_id, name } => {
                let r = client
                    .api()
                    .rename_folder(proto::RenameFolderRequest { folder_id: folder_id.clone(), name: name.clone() })
                    .await?;
                let f = r.folder.unwrap_or_default();
                out.show(output::folder(&f).0, || format!("renamed to {}", f.name));
            }
            Folders::Delete { folder_id } => {
                client.api().delete_folder(proto::DeleteFolderRequest { folder_id: folder_id.clone() }).await?;
                out.show(json!({ "deleted": folder_id }), || format!("deleted folder {folder_id}"));
            }
            Folders::Leave { folder_id } => {
                client.api().leave_folder(proto::LeaveFolderRequest { folder_id: folder_id.clone() }).await?;
                out.show(json!({ "left": folder_id }), || format!("left folder {folder_id}"));
            }
        }
        Ok(())
    }

    /// A member's user id, from an id or an email.
    async fn member_id(client: &Client, folder_id: &str, member: &str) -> anyhow::Result<String> {
        if !member.contains('@') {
            return Ok(member.to_owned());
        }
        let mut members = std::pin::pin!(client.members(folder_id));
        while let Some(m) = members.next().await {
            let m = m?;
            if m.email.eq_ignore_ascii_case(member) {
                return Ok(m.user_id);
            }
        }
        bail!("{member} is not a member of folder {folder_id}")
    }

    pub async fn members(&self, c: &Members, out: &Out) -> anyhow::Result<()> {
        let client = self.client()?;
        match c {
            Members::List { folder_id } => {
                let rows = collect(client.members(folder_id), "members", output::member).await?;
                out.table(&["user id", "email", "access"], rows);
            }
            Members::Set { folder_id, member, level } => {
                let user_id = Self::member_id(&client, folder_id, member).await?;
                let m = client.set_member_access(folder_id, &user_id, (*level).into()).await?;
                out.show(output::member(&m).0, || format!("{} now has {} access", m.email, output::level(m.access)));
            }
            Members::Remove { folder_id, member } => {
                let user_id = Self::member_id(&client, folder_id, member).await?;
                client.remove_member(folder_id, &user_id).await?;
                out.show(json!({ "removed": user_id }), || format!("removed {member}"));
            }
        }
        Ok(())
    }

    pub async fn items(&self, c: &Items, out: &Out) -> anyhow::Result<()> {
        match c {
            Items::List { folder_id } => {
                let rows = collect(self.client()?.items(folder_id), "items", output::summary).await?;
                out.table(&["id", "kind", "name", "version", "updated by"], rows);
            }
            Items::Get { folder_id, item_id } => {
                let i = self.client()?.item(folder_id, item_id).await?;
                out.show(output::item(&i), || serde_json::to_string_pretty(&output::item(&i)).unwrap_or_default());
            }
            Items::ShareConnection(s) => {
                let client = self.client_with_credentials()?;
                let uri = match &s.uri {
                    Some(uri) => {
                        let typed = proto::Connection { connection_string: uri.clone(), ..Default::default() };
                        if ts_client::strip_secrets(&typed)?.1.password.is_some() {
                            bail!(
                                "--uri holds a password, visible to anyone who can list processes; use --uri-stdin or --password-stdin"
                            );
                        }
                        uri.clone()
                    }
                    None => read_secret_line()?,
                };
                let connection = proto::Connection {
                    connection_string: uri,
                    ssh_host: s.ssh_host.clone().unwrap_or_default(),
                    ssh_username: s.ssh_username.clone().unwrap_or_default(),
                    ..Default::default()
                };
                let credentials = LocalCredentials {
                    password: if s.password_stdin { Some(read_secret_line()?) } else { None },
                    ..Default::default()
                };
                let shared = client
                    .share_connection(
                        &s.folder_id,
                        &s.name,
                        &s.description,
                        ConnectionInput { connection, credentials },
                    )
                    .await?;
                let v = json!({ "item": output::item(&shared.item), "kept_locally": shared.kept_locally });
                out.show(v, || {
                    let id = shared.item.summary.as_ref().map(|s| s.id.as_str()).unwrap_or_default();
                    format!("shared connection {id}; kept on this machine only: {}", list_or_none(&shared.kept_locally))
                });
            }
            Items::ShareQuery(q) => {
                let content = item_content::Content::Query(proto::Query {
                    database: q.database.clone(),
                    collection: q.collection.clone(),
                    filter: q.filter.clone(),
                    projection: q.projection.clone(),
                    sort: q.sort.clone(),
                    limit: q.limit,
                });
                let r = self.client()?.create_item(&q.folder_id, &q.name, &q.description, content).await?;
                let item = r.item.unwrap_or_default();
                out.show(output::item(&item), || {
                    format!("shared query {}", item.summary.as_ref().map(|s| s.id.as_str()).unwrap_or_default())
                });
            }
            Items::Update { folder_id, item_id, name, description } => {
                let client = self.client()?;
                let current = client.item(folder_id, item_id).await?;
                let summary = current.summary.clone().unwrap_or_default();
                let request = proto::UpdateItemRequest {
                    folder_id: folder_id.clone(),
                    item_id: item_id.clone(),
                    expected_version: summary.version,
                    name: name.clone().unwrap_or(summary.name),
                    description: description.clone().unwrap_or(current.description),
                    content: current.content,
                };
                let item = client.api().update_item(request).await?.item.unwrap_or_default();
                out.show(output::item(&item), || format!("updated {item_id}"));
            }
            Items::Delete { folder_id, item_id } => {
                let client = self.client()?;
                let version = client.item(folder_id, item_id).await?.summary.map(|s| s.version).unwrap_or_default();
                let request = proto::DeleteItemRequest {
                    folder_id: folder_id.clone(),
                    item_id: item_id.clone(),
                    expected_version: version,
                };
                client.api().delete_item(request).await?;
                out.show(json!({ "deleted": item_id }), || format!("deleted item {item_id}"));
            }
            Items::Move { folder_id, item_id, target_folder_id } => {
                let client = self.client()?;
                let version = client.item(folder_id, item_id).await?.summary.map(|s| s.version).unwrap_or_default();
                let request = proto::MoveItemRequest {
                    folder_id: folder_id.clone(),
                    item_id: item_id.clone(),
                    expected_version: version,
                    target_folder_id: target_folder_id.clone(),
                };
                let item = client.api().move_item(request).await?.item.unwrap_or_default();
                out.show(output::item(&item), || format!("moved {item_id} to {target_folder_id}"));
            }
        }
        Ok(())
    }

    pub async fn invitations(&self, c: &Invitations, out: &Out) -> anyhow::Result<()> {
        let client = self.client()?;
        let headers = ["id", "folder", "invitee", "inviter", "access", "state"];
        match c {
            Invitations::List { folder: None } => {
                out.table(&headers, collect(client.my_invitations(), "invitations", output::invitation).await?);
            }
            Invitations::List { folder: Some(f) } => {
                out.table(&headers, collect(client.folder_invitations(f), "invitations", output::invitation).await?);
            }
            Invitations::Send { folder_id, email, level } => {
                let i = client.invite(folder_id, email, (*level).into()).await?;
                out.show(output::invitation(&i).0, || format!("invited {email} ({})", i.id));
            }
            Invitations::Accept { invitation_id } => {
                let r = client.accept_invitation(invitation_id).await?;
                out.show(json!({ "folder_id": r.folder_id, "access": output::level(r.access) }), || {
                    format!("joined folder {} with {} access", r.folder_id, output::level(r.access))
                });
            }
            Invitations::Decline { invitation_id } => {
                let id = invitation_id.clone();
                client.api().decline_invitation(proto::DeclineInvitationRequest { invitation_id: id }).await?;
                out.show(json!({ "declined": invitation_id }), || format!("declined {invitation_id}"));
            }
            Invitations::Revoke { invitation_id } => {
                let id = invitation_id.clone();
                client.api().revoke_invitation(proto::RevokeInvitationRequest { invitation_id: id }).await?;
                out.show(json!({ "revoked": invitation_id }), || format!("revoked {invitation_id}"));
            }
            Invitations::Resend { invitation_id } => {
                let id = invitation_id.clone();
                let r = client.api().resend_invitation(proto::ResendInvitationRequest { invitation_id: id }).await?;
                let i = r.invitation.unwrap_or_default();
                out.show(output::invitation(&i).0, || format!("resent {invitation_id}"));
            }
        }
        Ok(())
    }

    pub async fn audit(&self, folder_id: &str, out: &Out) -> anyhow::Result<()> {
        let rows = collect(self.client()?.folder_audit(folder_id), "events", output::event).await?;
        out.table(&["time", "actor", "action", "status"], rows);
        Ok(())
    }

    pub async fn privacy(&self, c: &Privacy, out: &Out) -> anyhow::Result<()> {
        match c {
            Privacy::Export { out: path } => {
                let client = self.client()?;
                let mut parts = std::pin::pin!(client.export_my_data());
                let mut document = ExportDocument::new();
                let mut progress = ExportProgress::new(out.json);
                while let Some(part) = parts.next().await {
                    let part = part.inspect_err(|_| progress.done())?;
                    progress.tick(&part);
                    document.push(&part);
                }
                progress.done();
                document.write(path)?;
                let s = document.check_complete()?;
                let v = json!({ "file": path.display().to_string(), "export_time": output::time(&s.export_time),
                    "memberships": s.memberships, "invitations": s.invitations, "items": s.items,
                    "sessions": s.sessions, "audit_events": s.audit_events });
                out.show(v, || {
                    format!(
                        "exported your data to {}: your account, {} memberships, {} invitations, {} items, {} sessions, {} audit events",
                        path.display(),
                        s.memberships,
                        s.invitations,
                        s.items,
                        s.sessions,
                        s.audit_events
                    )
                });
            }
        }
        Ok(())
    }

    pub async fn account(&self, c: &Account, out: &Out) -> anyhow::Result<()> {
        match c {
            Account::Delete { confirm } => {
                let r = self.client()?.delete_my_account(confirm).await?;
                let v = json!({ "pseudonym": r.pseudonym, "deleted_folder_ids": r.deleted_folder_ids,
                    "memberships_removed": r.memberships_removed, "invitations_removed": r.invitations_removed,
                    "signed_out": true });
                out.show(v, || {
                    let folders = if r.deleted_folder_ids.is_empty() {
                        "none".to_owned()
                    } else {
                        r.deleted_folder_ids.join(", ")
                    };
                    format!(
                        "your account is erased; where your email remains it now reads {}\n\
                         {} memberships and {} invitations removed\n\
                         folders deleted (you were their only member): {folders}\n\
                         signed out on this machine",
                        r.pseudonym, r.memberships_removed, r.invitations_removed
                    )
                });
            }
        }
        Ok(())
    }

    pub fn credentials(&self, c: &Credentials, out: &Out) -> anyhow::Result<()> {
        let store = self.credential_store()?;
        match c {
            Credentials::Set { item_id, username, password_stdin, ssh_username, ssh_password_stdin, ssh_key_file } => {
                let secret = if *password_stdin || *ssh_password_stdin { Some(read_secret_line()?) } else { None };
                let given = LocalCredentials {
                    username: username.clone(),
                    password: secret.clone().filter(|_| *password_stdin),
                    ssh_username: ssh_username.clone(),
                    ssh_password: secret.filter(|_| *ssh_password_stdin),
                    ssh_private_key: ssh_key_file.as_deref().map(absolute).transpose()?,
                    ..Default::default()
                };
                let merged = store.get(item_id)?.unwrap_or_default().merged(&given);
                store.set(item_id, &merged)?;
                let set = merged.set_fields();
                out.show(json!({ "item_id": item_id, "set": set }), || {
                    format!("kept for {item_id}: {}", list_or_none(&set))
                });
            }
            Credentials::Show { item_id } => {
                let set = store.get(item_id)?.map(|c| c.set_fields()).unwrap_or_default();
                out.show(json!({ "item_id": item_id, "set": set }), || {
                    format!("kept for {item_id}: {}", list_or_none(&set))
                });
            }
            Credentials::Forget { item_id } => {
                store.forget(item_id)?;
                out.show(json!({ "forgotten": item_id }), || format!("forgot the credentials of {item_id}"));
            }
        }
        Ok(())
    }

    pub async fn uri(&self, folder_id: &str, item_id: &str, out: &Out) -> anyhow::Result<()> {
        let uri = self.client_with_credentials()?.connection_uri(folder_id, item_id).await?;
        out.show(json!({ "uri": uri }), || uri.clone());
        Ok(())
    }
}

fn absolute(p: &Path) -> anyhow::Result<String> {
    Ok(std::path::absolute(p)?.to_string_lossy().into_owned())
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() { "nothing".into() } else { names.join(", ") }
}

/// An export's counts on standard error as its parts arrive: one line rewritten in place on a
/// terminal, else a line every 500 parts (none with --json); the totals at the end.
struct ExportProgress {
    /// Memberships, invitations, items, sessions, audit events.
    counts: [u64; 5],
    terminal: bool,
    quiet: bool,
    parts: u64,
    last: std::time::Instant,
}

impl ExportProgress {
    fn new(json: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        ExportProgress { counts: [0; 5], terminal, quiet: json && !terminal, parts: 0, last: std::time::Instant::now() }
    }

    fn line(&self) -> String {
        let [m, i, it, s, e] = self.counts;
        format!("exported {m} memberships, {i} invitations, {it} items, {s} sessions, {e} audit events")
    }

    fn tick(&mut self, part: &ExportPart) {
        let slot = match part {
            ExportPart::Membership(_) => 0,
            ExportPart::Invitation(_) => 1,
            ExportPart::Item(_) => 2,
            ExportPart::Session(_) => 3,
            ExportPart::AuditEvent(_) => 4,
            ExportPart::Account(_) | ExportPart::Summary(_) => return,
        };
        self.counts[slot] += 1;
        self.parts += 1;
        if self.quiet {
            return;
        }
        if self.terminal {
            if self.last.elapsed() >= std::time::Duration::from_millis(100) {
                self.last = std::time::Instant::now();
                eprint!("\r{}…", self.line());
            }
        } else if self.parts.is_multiple_of(500) {
            eprintln!("{}…", self.line());
        }
    }

    fn done(&self) {
        if self.quiet {
            return;
        }
        if self.terminal {
            eprintln!("\r{}.  ", self.line());
        } else {
            eprintln!("{}.", self.line());
        }
    }
}

/// Every entry of a listing as output rows, with progress on a terminal.
async fn collect<T>(
    stream: impl Stream<Item = Result<T, ts_client::Error>>,
    what: &'static str,
    row: impl Fn(&T) -> (Value, Vec<String>),
) -> anyhow::Result<Vec<(Value, Vec<String>)>> {
    let mut stream = std::pin::pin!(stream);
    let mut progress = Progress::new(what);
    let mut rows = Vec::new();
    while let Some(entry) = stream.next().await {
        rows.push(row(&entry?));
        progress.tick();
    }
    progress.done();
    Ok(rows)
}
