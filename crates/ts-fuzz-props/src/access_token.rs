//! Access tokens (`ts_contract::tokens::Verifier`): compact JWS signed with Ed25519.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::EncodingKey;
use ring::signature::{Ed25519KeyPair, KeyPair};
use ts_contract::tokens::{AUDIENCE, Claims, ISSUER, PublicKey, TokenError, Verifier, header, key_id};

/// The instant every token is verified at, in Unix seconds (the clock is injected).
pub const NOW_SECS: u64 = 1_700_000_000;

/// The instant every token is verified at.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

/// An Ed25519 signing key as auth holds it, and the verifier that trusts it.
pub struct Signer {
    kid: String,
    encoding: EncodingKey,
    verifier: Verifier,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// The PKCS#8 (v1) prefix of an Ed25519 private key, before its 32-byte seed.
const PKCS8_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

impl Signer {
    fn from_pkcs8(pkcs8: &[u8]) -> Signer {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).expect("a valid Ed25519 PKCS#8 key");
        let public = pair.public_key().as_ref().to_vec();
        let kid = key_id(&public);
        let verifier = Verifier::new(&[PublicKey { kid: kid.clone(), bytes: public }]);
        Signer { kid, encoding: EncodingKey::from_ed_der(pkcs8), verifier }
    }

    /// The fixed key the seed tokens are signed with.
    pub fn fixed() -> Signer {
        let mut pkcs8 = PKCS8_ED25519_PREFIX.to_vec();
        pkcs8.extend_from_slice(&[0x42; 32]);
        Signer::from_pkcs8(&pkcs8)
    }

    /// A freshly generated key.
    pub fn generate() -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("key generation works");
        Signer::from_pkcs8(pkcs8.as_ref())
    }

    /// This key with another key's id: what a forger who knows the kid could sign with.
    pub fn impostor(&self) -> Signer {
        Signer { kid: self.kid.clone(), ..Signer::generate() }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The verifier trusting this key only.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Signs `claims` as auth does.
    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&header(&self.kid), claims, &self.encoding).expect("signing works")
    }
}

/// Claims as auth issues them, valid for `ttl_secs` after [`NOW_SECS`].
pub fn claims(sub: &str, email: &str, lic: &str, sid: &str, ttl_secs: u64) -> Claims {
    Claims {
        sub: sub.to_owned(),
        email: email.to_owned(),
        lic: lic.to_owned(),
        sid: sid.to_owned(),
        iat: NOW_SECS - 1,
        exp: NOW_SECS + ttl_secs,
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
    }
}

/// Arbitrary text: reading the key id and verifying never panic, and whatever verifies was
/// issued by auth for teamshare and has not expired.
pub fn arbitrary_token(verifier: &Verifier, token: &str) {
    let _ = Verifier::kid_of(token);
    if let Ok(c) = verifier.verify(token, now()) {
        assert!(c.exp > NOW_SECS, "an expired token verified");
        assert_eq!((c.iss.as_str(), c.aud.as_str()), (ISSUER, AUDIENCE));
        assert!(verifier.knows(&Verifier::kid_of(token).expect("a verified token names its key")));
    }
}

/// A token signed by `signer` verifies to its claims and names its key; changing any one
/// character (`m` picks it and its replacement), cutting it short or extending it is refused,
/// as is the same token after expiry and one signed by another key under the same key id.
pub fn signed_round_trip(signer: &Signer, claims: &Claims, m: usize) {
    let token = signer.sign(claims);
    let verifier = signer.verifier();
    assert_eq!(verifier.verify(&token, now()).as_ref(), Ok(claims));
    assert_eq!(Verifier::kid_of(&token).as_deref(), Ok(signer.kid()));
    let at_expiry = UNIX_EPOCH + Duration::from_secs(claims.exp);
    assert_eq!(verifier.verify(&token, at_expiry), Err(TokenError::Expired));
    let forged = signer.impostor().sign(claims);
    assert_eq!(verifier.verify(&forged, now()), Err(TokenError::Invalid), "another key under the same kid");

    let mut alphabet = crate::BASE64URL.to_vec();
    alphabet.push(b'.');
    let changed = crate::replace_char(&token, m, &alphabet);
    assert!(verifier.verify(&changed, now()).is_err(), "{token} changed to {changed} and still verified");
    let cut = m % token.len();
    assert!(verifier.verify(&token[..cut], now()).is_err(), "cut to {cut} characters and still verified");
    let longer = format!("{token}{}", alphabet[m % alphabet.len()] as char);
    assert!(verifier.verify(&longer, now()).is_err(), "extended and still verified");
}

/// The fuzz target: `data` as a token for the fixed key's verifier, and as claims to sign
/// and mutate.
pub fn fuzz(data: &[u8]) {
    let signer = Signer::fixed();
    arbitrary_token(signer.verifier(), &String::from_utf8_lossy(data));
    let (m, rest) = crate::choice(data);
    let text = String::from_utf8_lossy(rest);
    let mut fields = text.splitn(4, '\n');
    let mut next = || fields.next().unwrap_or_default();
    let (sub, email, lic, sid) = (next(), next(), next(), next());
    signed_round_trip(&signer, &claims(sub, email, lic, sid, 1 + (m as u64 % 86_400)), m >> 8);
}
