//! Passwordless email verification: one-time codes, stored only as a keyed hash, that expire,
//! allow a few tries, and are sent at a limited rate.

use std::time::{Duration, SystemTime};
use ts_contract::status::Reason;

use bson::Binary;
use bson::spec::BinarySubtype;
use ts_contract::clock::{bson_date, unix_secs};
use ts_mail::Message;

use crate::email::Email;
use crate::state::{Auth, AuthError, AuthResult};
use crate::store::CodeDoc;

const CODE_DIGITS: u32 = 6;
const HOUR: Duration = Duration::from_secs(3600);
/// The counter of failed sign-in attempts per client address.
const FAILED_SIGN_INS: &str = "failed-sign-ins";

/// A uniformly random numeric code.
fn new_code() -> AuthResult<String> {
    let modulus = 10u32.pow(CODE_DIGITS);
    let limit = u32::MAX - (u32::MAX % modulus);
    loop {
        let mut b = [0u8; 4];
        getrandom(&mut b)?;
        let n = u32::from_be_bytes(b);
        if n < limit {
            return Ok(format!("{:0width$}", n % modulus, width = CODE_DIGITS as usize));
        }
    }
}

pub(crate) fn getrandom(buf: &mut [u8]) -> AuthResult<()> {
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), buf)
        .map_err(|_| AuthError::Internal("random source failed".into()))
}

impl Auth {
    /// The fixed-window counter of `kind` for `key` at this moment: its id (a keyed hash, so
    /// no address or email is stored), the window's end, and now.
    fn window(&self, kind: &str, key: &str, window: Duration) -> (String, u64, u64) {
        let now = unix_secs(self.now());
        let start = now - now % window.as_secs();
        let id = format!("{kind}:{}:{start}", hex(&self.mac(&[kind.as_bytes(), key.as_bytes()])[..16]));
        (id, start + window.as_secs(), now)
    }

    /// Takes one unit from a fixed-window counter; RESOURCE_EXHAUSTED with the time until
    /// the window ends when it is spent. The conditional upsert makes concurrent takes at the
    /// cap conflict instead of both passing.
    pub(crate) async fn take_rate(&self, kind: &str, key: &str, cap: u32, window: Duration) -> AuthResult<()> {
        let (id, end, now) = self.window(kind, key, window);
        let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(end);
        match self.store.take_unit(&id, cap, bson_date(expires)).await {
            Ok(_) => Ok(()),
            Err(e) if ts_stores::is_duplicate_key(&e) => {
                let retry_after = Duration::from_secs(end - now);
                Err(AuthError::Exhausted { message: format!("too many verification emails ({kind})"), retry_after })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Refuses sign-in attempts (codes, single sign-on tokens, refresh tokens) from a client
    /// address that has already failed `failed_sign_ins_per_client_per_hour` times this hour:
    /// guessing and forging are bounded, and so are the audit events they leave. Successful
    /// sign-ins are not counted. No address (a call not through the gateway): no limit.
    pub async fn check_sign_in_failures(&self, client: &str) -> AuthResult<()> {
        if client.is_empty() {
            return Ok(());
        }
        let (id, end, now) = self.window(FAILED_SIGN_INS, client, HOUR);
        let failed = self.store.counted(&id).await?;
        if failed >= i64::from(self.policy.failed_sign_ins_per_client_per_hour) {
            let retry_after = Duration::from_secs(end - now);
            let message = "too many failed sign-in attempts from this address".to_owned();
            return Err(AuthError::Exhausted { message, retry_after });
        }
        Ok(())
    }

    /// Counts a failed sign-in attempt against its client address (best effort: a store
    /// failure here is logged, the caller already has their answer).
    pub async fn note_sign_in_failure(&self, client: &str) {
        if client.is_empty() {
            return;
        }
        let (id, end, _) = self.window(FAILED_SIGN_INS, client, HOUR);
        let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(end);
        if let Err(e) = self.store.count_unit(&id, bson_date(expires)).await {
            tracing::warn!(error = %e, "cannot count a failed sign-in attempt");
        }
    }

    /// Sends a new code to `email`, replacing any earlier one.
    pub async fn start_verification(&self, raw_email: &str, client: &str) -> AuthResult<SystemTime> {
        let email = Email::parse(raw_email).map_err(|m| AuthError::InvalidArgument(format!("email {m}")))?;
        if self.erasure_running(email.as_str()).await? {
            // No code (keyed by the address) is made while the address is being erased.
            return Err(AuthError::Erasing);
        }
        self.take_rate("per-email", email.as_str(), self.policy.sends_per_email_per_hour, HOUR).await?;
        if !client.is_empty() {
            self.take_rate("per-client", client, self.policy.sends_per_client_per_hour, HOUR).await?;
        }
        let code = new_code()?;
        let now = self.now();
        let expires = now + Duration::from_secs(self.policy.code_ttl_secs);
        let code_mac = Binary {
            subtype: BinarySubtype::Generic,
            bytes: self.mac(&[b"code", email.as_str().as_bytes(), code.as_bytes()]),
        };
        self.store
            .replace_code(&CodeDoc {
                email: email.as_str().to_owned(),
                code_mac,
                expires_at: bson_date(expires),
                tries_left: i64::from(self.policy.code_max_tries),
                // Purged by TTL an hour after expiry; until then an attempt says "expired".
                purge_at: bson_date(expires + HOUR),
            })
            .await?;
        let minutes = self.policy.code_ttl_secs / 60;
        let message = Message {
            to: email.as_str().to_owned(),
            subject: "Your teamshare verification code".into(),
            body: format!(
                "Your teamshare verification code is {code}.\n\nIt expires in {minutes} minutes. If you did not ask for it, ignore this email.\n"
            ),
        };
        if let Err(e) = self.mailer.send(message).await {
            // Without the email the code is useless; do not leave it behind.
            self.store.delete_code(email.as_str()).await?;
            return Err(e.into());
        }
        // No address in logs: an erased person must not stay behind in them (PRIVACY.md).
        tracing::info!(domain = %email.domain(), "verification code sent");
        Ok(expires)
    }

    /// Checks a code. On a match the code is consumed (single use) and the email verified.
    pub async fn complete_verification(&self, raw_email: &str, code: &str) -> AuthResult<Email> {
        let email = Email::parse(raw_email).map_err(|m| AuthError::InvalidArgument(format!("email {m}")))?;
        let code = code.trim();
        if code.len() != CODE_DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuthError::InvalidArgument(format!("code must be {CODE_DIGITS} digits")));
        }
        let none = || {
            AuthError::Precondition(
                Reason::CodeMissing,
                "no active verification code for this email; request a new one".into(),
            )
        };
        let current = self.store.code(email.as_str()).await?.ok_or_else(none)?;
        if self.now() >= current.expires_at.to_system_time() {
            return Err(AuthError::Precondition(
                Reason::CodeExpired,
                "the verification code expired; request a new one".into(),
            ));
        }
        // Spend a try first, atomically, so parallel guesses cannot exceed the limit.
        let spent = self.store.spend_code_try(email.as_str()).await?.ok_or_else(|| {
            AuthError::Precondition(Reason::CodeAttemptsExhausted, "too many wrong codes; request a new one".into())
        })?;
        let offered = self.mac(&[b"code", email.as_str().as_bytes(), code.as_bytes()]);
        if !ct_eq(&spent.code_mac.bytes, &offered) {
            let left = spent.tries_left;
            return Err(AuthError::Unauthenticated(
                Reason::CodeInvalid,
                format!("wrong verification code ({left} tries left)"),
            ));
        }
        // Consume exactly this code; a concurrent use of the same code loses here.
        let stored = Binary { subtype: BinarySubtype::Generic, bytes: spent.code_mac.bytes };
        if !self.store.consume_code(email.as_str(), &stored).await? {
            return Err(none());
        }
        Ok(email)
    }
}

/// Compares without an early exit, so timing says nothing about where inputs differ.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_are_six_digits() {
        for _ in 0..100 {
            let c = super::new_code().unwrap();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }
}
