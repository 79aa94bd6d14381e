//! Which connection-option names carry secrets: the one deny list that both the folders
//! service (which strips secrets from every shared connection it stores) and the client SDK
//! (which strips them before anything leaves the user's machine) apply. Names are compared normalised: percent-decoded (again
//! and again, so double encoding does not hide them), lower-cased, and with everything but
//! letters and digits dropped, so `sshPassphrase`, `SSH_PASSPHRASE`, `ssh-pass%70hrase` and
//! `ssh%2570assphrase` are one name.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Parts of a normalised name that mark a secret value anywhere in it.
const SECRET_PARTS: &[&str] =
    &["password", "passwd", "passphrase", "pwd", "secret", "token", "credential", "privatekey", "apikey"];

/// Endings of a normalised name that mark a secret value: `sshPass`, `dbPw`, `clientKey`,
/// `tlsCertificateKey`. (`tlsCertificateKeyFile` is a path, and does not end so.)
const SECRET_ENDINGS: &[&str] = &["pass", "pw", "key"];

/// Normalised names that sound secret but are not: MONGODB-OIDC's `TOKEN_RESOURCE` is an
/// audience URI.
const NOT_SECRET: &[&str] = &["tokenresource"];

/// Most rounds of percent-decoding before a name is taken as it is.
const DECODE_ROUNDS: usize = 4;

/// The name as compared: decoded, lower-case, letters and digits only.
pub fn normalise(name: &str) -> String {
    let mut name = Cow::Borrowed(name);
    for _ in 0..DECODE_ROUNDS {
        let decoded = percent_decode_str(&name).decode_utf8_lossy().into_owned();
        if decoded == name {
            break;
        }
        name = Cow::Owned(decoded);
    }
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// Whether an option (or authentication property) with this name holds a secret.
pub fn is_secret(name: &str) -> bool {
    let n = normalise(name);
    !NOT_SECRET.contains(&n.as_str())
        && (SECRET_PARTS.iter().any(|p| n.contains(p)) || SECRET_ENDINGS.iter().any(|e| n.ends_with(e)))
}

/// Whether the name is `authMechanismProperties`, however written.
pub fn is_auth_properties(name: &str) -> bool {
    normalise(name) == "authmechanismproperties"
}

/// The name as shown in `removed_fields`: decoded once, printable ASCII only, at most 64
/// characters, so that a report stays readable whatever was sent.
pub fn display(name: &str) -> String {
    percent_decode_str(name).decode_utf8_lossy().chars().filter(|c| c.is_ascii_graphic()).take(64).collect()
}

/// Drops the secret entries from an `authMechanismProperties` value (`NAME:value,…`, already
/// percent-decoded), returning what is kept and the names of what was dropped. An entry
/// without a colon is dropped only if its name is secret.
pub fn strip_auth_properties(value: &str) -> (Vec<&str>, Vec<String>) {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for entry in value.split(',') {
        let name = entry.split_once(':').map_or(entry, |(n, _)| n);
        if is_secret(name) {
            dropped.push(display(name));
        } else {
            kept.push(entry);
        }
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_found_however_written() {
        for name in [
            "password",
            "PassWord",
            "%70assword",
            "%2570assword",
            "pass%77ord",
            "sshPassword",
            "ssh_passphrase",
            "SSH-PassPhrase",
            "ssh pass%70hrase",
            "tlsCertificateKeyFilePassword",
            "sslPEMKeyPassword",
            "proxyPassword",
            "db_passwd",
            "pwd",
            "client_secret",
            "apiToken",
            "AWS_SESSION_TOKEN",
            "awsCredentials",
            "sshPrivateKey",
            "private-key",
            "x-api-key",
            "apikey",
            "sshPass",
            "dbPw",
            "tlsCertificateKey",
        ] {
            assert!(is_secret(name), "{name}");
        }
    }

    #[test]
    fn ordinary_options_are_not_secret() {
        for name in [
            "appName",
            "authSource",
            "authMechanism",
            "authMechanismProperties",
            "replicaSet",
            "tls",
            "ssl",
            "tlsCAFile",
            "tlsCertificateKeyFile",
            "sslPEMKeyFile",
            "tlsAllowInvalidHostnames",
            "tlsInsecure",
            "directConnection",
            "readPreference",
            "readPreferenceTags",
            "retryWrites",
            "w",
            "wTimeoutMS",
            "socketTimeoutMS",
            "connectTimeoutMS",
            "serverSelectionTimeoutMS",
            "maxPoolSize",
            "compressors",
            "zlibCompressionLevel",
            "proxyHost",
            "proxyUsername",
            "srvServiceName",
            "loadBalanced",
            "uuidRepresentation",
            "sshTunnelIdentityFile",
            "TOKEN_RESOURCE",
            "token_resource",
            "SERVICE_NAME",
            "CANONICALIZE_HOST_NAME",
            "ENVIRONMENT",
            "bypassAutoEncryption",
        ] {
            assert!(!is_secret(name), "{name}");
        }
    }

    #[test]
    fn names_are_normalised_and_displayed() {
        assert_eq!(normalise("SSH-Pass%70hrase"), "sshpassphrase");
        assert_eq!(normalise("%25252570"), "p", "decoded four times at most");
        assert_eq!(normalise("%2525252570"), "70");
        assert!(is_auth_properties("AuthMechanism%50roperties"));
        assert!(!is_auth_properties("authMechanism"));
        assert_eq!(display("%70ass word\u{7}"), "password");
        assert_eq!(display(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn secret_authentication_properties_are_dropped() {
        let (kept, dropped) = strip_auth_properties(
            "SERVICE_NAME:mongodb,AWS_SESSION_TOKEN:abc,aws%5Fsession%5Ftoken:def,TOKEN_RESOURCE:api://x,token",
        );
        assert_eq!(kept, ["SERVICE_NAME:mongodb", "TOKEN_RESOURCE:api://x"]);
        assert_eq!(dropped, ["AWS_SESSION_TOKEN", "aws_session_token", "token"]);
    }
}
