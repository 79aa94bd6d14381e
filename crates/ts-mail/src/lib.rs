//! Outgoing email (verification codes, invitations) behind one trait: SMTP through lettre in
//! production; a directory of message files in development and tests.

use std::path::PathBuf;
use std::sync::Arc;

use secrecy::ExposeSecret;

use ts_config::{ConfigError, MailConfig, SmtpSecurity};

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// Why a message was not sent. Never includes the body (it may hold a code), and its
/// message never names the recipient (logs must not keep an address: PRIVACY.md).
#[derive(Debug, thiserror::Error)]
#[error("mail not sent: {reason}")]
pub struct MailError {
    /// Recipient.
    pub to: String,
    /// Why.
    pub reason: String,
}

/// Sends email.
#[tonic::async_trait]
pub trait Mailer: Send + Sync + std::fmt::Debug + 'static {
    /// Sends one message.
    async fn send(&self, message: Message) -> Result<(), MailError>;
}

/// Builds the configured mailer; the file mailer is refused in production.
pub fn from_config(config: &MailConfig, production: bool) -> Result<Arc<dyn Mailer>, ConfigError> {
    match config {
        MailConfig::File { .. } if production => Err(ConfigError::key(
            "mail.mode",
            "the file mailer is for development only and is refused when production = true",
        )),
        MailConfig::File { dir } => {
            std::fs::create_dir_all(dir)
                .map_err(|e| ConfigError::key("mail.dir", format!("cannot create {}: {e}", dir.display())))?;
            Ok(Arc::new(FileMailer { dir: dir.clone() }))
        }
        MailConfig::Smtp { host, port, security, username, password, from } => {
            use lettre::AsyncSmtpTransport;
            use lettre::transport::smtp::authentication::Credentials;
            let builder = match security {
                SmtpSecurity::Starttls => AsyncSmtpTransport::<lettre::Tokio1Executor>::starttls_relay(host),
                SmtpSecurity::Tls => AsyncSmtpTransport::<lettre::Tokio1Executor>::relay(host),
                SmtpSecurity::None => Ok(AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(host)),
            }
            .map_err(|e| ConfigError::key("mail.host", e.to_string()))?;
            let mut builder = builder.port(*port).timeout(Some(std::time::Duration::from_secs(10)));
            if let (Some(u), Some(p)) = (username, password) {
                builder = builder.credentials(Credentials::new(u.clone(), p.expose_secret().to_owned()));
            }
            let from = from
                .parse()
                .map_err(|e: lettre::address::AddressError| ConfigError::key("mail.from", e.to_string()))?;
            Ok(Arc::new(SmtpMailer { transport: builder.build(), from }))
        }
    }
}

/// Writes each message to `<dir>/<unix-nanos>-<uuid>.json`.
#[derive(Debug, Clone)]
pub struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    /// A mailer writing into `dir` (created if needed).
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(FileMailer { dir })
    }

    /// Every message in `dir` sent to `to`, oldest first.
    pub fn read(dir: &std::path::Path, to: &str) -> Vec<Message> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|b| serde_json::from_slice::<Message>(&b).ok())
            .filter(|m| m.to == to)
            .collect()
    }
}

#[tonic::async_trait]
impl Mailer for FileMailer {
    async fn send(&self, message: Message) -> Result<(), MailError> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = self.dir.join(format!("{nanos:020}-{}.json", uuid::Uuid::new_v4().simple()));
        let bytes = serde_json::to_vec_pretty(&message)
            .map_err(|e| MailError { to: message.to.clone(), reason: e.to_string() })?;
        tokio::fs::write(&path, bytes)
            .await
            .map_err(|e| MailError { to: message.to.clone(), reason: e.to_string() })?;
        // Neither the recipient nor the subject (it names the inviter): logs keep no address.
        tracing::info!(file = %path.display(), "development mail written");
        Ok(())
    }
}

/// SMTP through lettre.
pub struct SmtpMailer {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer").field("from", &self.from.to_string()).finish_non_exhaustive()
    }
}

/// `text` with every occurrence of `address` (in any letter case) replaced by
/// `<recipient>`.
fn without(text: &str, address: &str) -> String {
    if address.is_empty() {
        return text.to_owned();
    }
    let (lower, needle) = (text.to_ascii_lowercase(), address.to_ascii_lowercase());
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    while let Some(at) = lower[rest..].find(&needle) {
        out.push_str(&text[rest..rest + at]);
        out.push_str("<recipient>");
        rest += at + needle.len();
    }
    out.push_str(&text[rest..]);
    out
}

#[tonic::async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, message: Message) -> Result<(), MailError> {
        use lettre::AsyncTransport;
        // A server may echo the recipient ("550 <bob@…>: rejected"): the reason never keeps it.
        let fail = |reason: String| MailError { to: message.to.clone(), reason: without(&reason, &message.to) };
        let to = message.to.parse().map_err(|e: lettre::address::AddressError| fail(e.to_string()))?;
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone())
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(message.body.clone())
            .map_err(|e| fail(e.to_string()))?;
        self.transport.send(email).await.map_err(|e| fail(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_reason_never_names_the_recipient() {
        let reason = without("550 5.1.1 <Bob@Example.com>: Recipient address rejected", "bob@example.com");
        assert_eq!(reason, "550 5.1.1 <<recipient>>: Recipient address rejected");
        assert_eq!(without("timed out", "bob@example.com"), "timed out");
    }

    #[test]
    fn the_file_mailer_is_refused_in_production() {
        let dir = tempfile::tempdir().unwrap();
        let config = MailConfig::File { dir: dir.path().to_owned() };
        let err = from_config(&config, true).unwrap_err().to_string();
        assert!(err.contains("mail.mode") && err.contains("production"), "{err}");
        assert!(from_config(&config, false).is_ok());
    }
}
