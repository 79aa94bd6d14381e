//! `teamshare-cli`: a terminal client for teamshare. User commands go through the public API
//! with the Rust SDK (`ts-client`): the session is kept in the user's config directory and
//! each user's own connection credentials stay on their machine. Operator commands speak to
//! the internal services over mTLS with the operator certificate. Human output by default,
//! `--json` for scripts (one JSON document per command).

mod operator;
mod output;
mod user;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// teamshare from a terminal: share MongoDB connections, queries and scripts through folders.
#[derive(Debug, Parser)]
#[command(name = "teamshare-cli", version, about)]
pub struct Cli {
    /// The gateway (remembered at login).
    #[arg(long, global = true, env = "TEAMSHARE_ENDPOINT")]
    endpoint: Option<String>,
    /// A CA bundle (PEM) to trust for the gateway instead of the system roots (remembered at
    /// login); `make dev`'s is .dev/certs/ca.pem.
    #[arg(long, global = true, env = "TEAMSHARE_CA")]
    ca: Option<PathBuf>,
    /// Where the session, settings and the credential file live (default: the user's config
    /// directory, such as ~/.config/teamshare).
    #[arg(long, global = true, env = "TEAMSHARE_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Where connection credentials are kept: `keyring` (the OS keychain) or `file` (encrypted
    /// under TEAMSHARE_CREDENTIALS_PASSPHRASE). Default: keyring on macOS and Windows, file on
    /// Linux (the kernel keyring lasts only for the login session).
    #[arg(long, global = true, env = "TEAMSHARE_CREDENTIAL_STORE")]
    credential_store: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign in with a code emailed to you (or an SSO id token).
    Login(user::Login),
    /// Sign out and forget the session.
    Logout,
    /// Who is signed in.
    Whoami,
    /// Folders you are a member of.
    #[command(subcommand)]
    Folders(user::Folders),
    /// A folder's members.
    #[command(subcommand)]
    Members(user::Members),
    /// Items in folders.
    #[command(subcommand)]
    Items(user::Items),
    /// Invitations to folders.
    #[command(subcommand)]
    Invitations(user::Invitations),
    /// A folder's audit trail (MANAGE only).
    Audit {
        /// The folder.
        folder_id: String,
    },
    /// Your own credentials for shared connections, kept on this machine only.
    #[command(subcommand)]
    Credentials(user::Credentials),
    /// A ready-to-use MongoDB URI for a shared connection, with your own credentials.
    Uri {
        /// The folder.
        folder_id: String,
        /// The connection item.
        item_id: String,
    },
    /// Your data (GDPR): a copy of everything held about you (PRIVACY.md).
    #[command(subcommand)]
    Privacy(user::Privacy),
    /// Your account: erase it (GDPR; PRIVACY.md).
    #[command(subcommand)]
    Account(user::Account),
    /// Operator commands over mTLS with the operator certificate.
    Operator(operator::Operator),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    ts_runtime::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", output::describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = output::Out { json: cli.json };
    let globals = user::Globals {
        endpoint: cli.endpoint,
        ca: cli.ca,
        config_dir: cli.config_dir,
        credential_store: cli.credential_store,
    };
    let ctx = || user::Context::new(&globals);
    match cli.command {
        Command::Operator(op) => operator::run(op, &out).await,
        Command::Login(login) => ctx()?.login(&login, &out).await,
        Command::Logout => ctx()?.logout(&out).await,
        Command::Whoami => ctx()?.whoami(&out).await,
        Command::Folders(c) => ctx()?.folders(&c, &out).await,
        Command::Members(c) => ctx()?.members(&c, &out).await,
        Command::Items(c) => ctx()?.items(&c, &out).await,
        Command::Invitations(c) => ctx()?.invitations(&c, &out).await,
        Command::Audit { folder_id } => ctx()?.audit(&folder_id, &out).await,
        Command::Credentials(c) => ctx()?.credentials(&c, &out),
        Command::Uri { folder_id, item_id } => ctx()?.uri(&folder_id, &item_id, &out).await,
        Command::Privacy(c) => ctx()?.privacy(&c, &out).await,
        Command::Account(c) => ctx()?.account(&c, &out).await,
    }
}
