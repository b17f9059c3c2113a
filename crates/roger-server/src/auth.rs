//! Tokens: HS256 JWTs with `sub`, `name`, `channels` and `exp`; `nbf` is honoured, and
//! `iss` and `aud` are checked (and required) when the server pins them.
//!
//! Each way a token can be wrong has its own error code so a client knows whether to ask
//! for a new sign-in (`TOKEN_EXPIRED`) or report a bad configuration (`TOKEN_INVALID`).
//! Tokens are never logged; only their subject is.

use jsonwebtoken::{
    decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use roger_protocol::{ChannelId, ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The claims Roger reads from a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Stable user id.
    pub sub: String,
    /// Display name.
    pub name: String,
    /// Channels this user may join. `"*"` allows every channel.
    pub channels: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds. A revocation refuses tokens issued at or before it (and
    /// every token without `iat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, Unix seconds: refused until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer (checked when the server pins one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience (checked when the server pins one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// The shortest HS256 secret a server accepts: RFC 7518 asks for a key at least as long
/// as the hash (256 bits); a short one can be brute-forced offline from any token.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a secret cannot sign tokens, if it cannot.
pub fn check_secret(secret: &[u8]) -> Result<(), String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the JWT secret is {} bytes; it must be at least {MIN_SECRET_BYTES} \
             (for example the output of `openssl rand -base64 32`)",
            secret.len()
        ));
    }
    Ok(())
}

impl Claims {
    /// Whether the token allows `channel`.
    pub fn allows(&self, channel: &ChannelId) -> bool {
        self.channels
            .iter()
            .any(|c| c == "*" || c == channel.as_str())
    }
}

/// Signs and checks tokens with one shared secret.
#[derive(Clone)]
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator { secret: <hidden> }")
    }
}

impl Authenticator {
    /// An authenticator for `secret` that pins no issuer or audience.
    pub fn new(secret: &[u8]) -> Self {
        Self::pinned(secret, None, None)
    }

    /// An authenticator for `secret`. A token must carry `issuer` as `iss` and
    /// `audience` as `aud` when they are given; tokens it issues carry them.
    pub fn pinned(secret: &[u8], issuer: Option<&str>, audience: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is exact: a token is refused the second it expires.
        validation.leeway = 0;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        // Without a pinned audience, an `aud` claim is not this server's business.
        validation.validate_aud = audience.is_some();
        if let Some(aud) = audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Authenticator {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
        }
    }

    /// A token for `user` allowing `channels`, valid for `ttl` from now.
    pub fn issue(&self, user: &str, name: &str, channels: &[String], ttl: Duration) -> String {
        let claims = Claims {
            sub: user.to_owned(),
            name: name.to_owned(),
            channels: channels.to_vec(),
            exp: unix_now().saturating_add(ttl.as_secs()),
            iat: Some(unix_now()),
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests use this for expired tokens).
    pub fn sign(&self, claims: &Claims) -> String {
        // HS256 signing of a serializable struct cannot fail.
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding).expect("HS256 signing")
    }

    /// Checks a token: `TOKEN_EXPIRED` when it has expired, `TOKEN_INVALID` for anything
    /// else wrong (bad signature, malformed, wrong algorithm, missing claims).
    pub fn verify(&self, token: &str) -> Result<Claims, ErrorBody> {
        match decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => {
                if data.claims.sub.is_empty() {
                    return Err(ErrorBody::new(
                        ErrorCode::TokenInvalid,
                        "token has an empty sub",
                    ));
                }
                Ok(data.claims)
            }
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => {
                    ErrorBody::new(ErrorCode::TokenExpired, "the token has expired")
                }
                ErrorKind::InvalidSignature => ErrorBody::new(
                    ErrorCode::TokenInvalid,
                    "the token's signature does not match this server's secret",
                ),
                ErrorKind::ImmatureSignature => ErrorBody::new(
                    ErrorCode::TokenInvalid,
                    "the token is not valid yet (its nbf is in the future)",
                ),
                ErrorKind::InvalidIssuer => ErrorBody::new(
                    ErrorCode::TokenInvalid,
                    "the token was issued by someone this server does not accept (iss)",
                ),
                ErrorKind::InvalidAudience => ErrorBody::new(
                    ErrorCode::TokenInvalid,
                    "the token is meant for another service (aud)",
                ),
                _ => ErrorBody::new(
                    ErrorCode::TokenInvalid,
                    format!("the token is not valid: {e}"),
                ),
            }),
        }
    }
}

/// Time-limited TURN credentials (the TURN REST convention coturn implements with
/// `--use-auth-secret`): username `EXPIRY:USER`, password
/// `base64(HMAC-SHA1(secret, username))`.
pub fn turn_credentials(secret: &str, user: &str, expiry_unix: u64) -> (String, String) {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let username = format!("{expiry_unix}:{user}");
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// Compares two secrets in a time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses `30s`, `15m`, `1h`, `7d` (or plain seconds).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("bad duration unit in {s:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_token_verifies_with_its_claims() {
        let a = Authenticator::new(b"secret");
        let t = a.issue(
            "alice",
            "Alice",
            &["general".into()],
            Duration::from_secs(60),
        );
        let c = a.verify(&t).unwrap();
        assert_eq!(c.sub, "alice");
        assert!(c.allows(&"general".into()));
        assert!(!c.allows(&"echo".into()));
    }

    #[test]
    fn expired_forged_and_garbage_tokens_get_distinct_codes() {
        let a = Authenticator::new(b"secret");
        let expired = a.sign(&Claims {
            sub: "alice".into(),
            name: "Alice".into(),
            channels: vec![],
            exp: unix_now() - 10,
            ..Claims::default()
        });
        assert_eq!(
            a.verify(&expired).unwrap_err().code,
            ErrorCode::TokenExpired
        );
        let forged = Authenticator::new(b"other").issue("alice", "A", &[], Duration::from_secs(60));
        assert_eq!(a.verify(&forged).unwrap_err().code, ErrorCode::TokenInvalid);
        assert_eq!(
            a.verify("garbage").unwrap_err().code,
            ErrorCode::TokenInvalid
        );
    }

    #[test]
    fn a_wildcard_allows_every_channel() {
        let c = Claims {
            sub: "a".into(),
            name: "a".into(),
            channels: vec!["*".into()],
            exp: 0,
            ..Claims::default()
        };
        assert!(c.allows(&"anything".into()));
    }

    #[test]
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("2d").unwrap(), Duration::from_secs(172800));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
    }

    #[test]
    fn turn_credentials_follow_the_rest_convention() {
        // Known answer: HMAC-SHA1("secret", "1700000000:alice"), base64.
        let (u, p) = turn_credentials("secret", "alice", 1_700_000_000);
        assert_eq!(u, "1700000000:alice");
        use base64::Engine;
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"secret").unwrap();
        mac.update(b"1700000000:alice");
        let expect = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(p, expect);
        assert_eq!(p.len(), 28, "base64 of a 20-byte digest");
    }

    #[test]
    fn the_debug_form_hides_the_secret() {
        let a = Authenticator::new(b"supersecret");
        assert!(!format!("{a:?}").contains("supersecret"));
    }

    fn claims(exp_in: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            name: "Alice".into(),
            channels: vec!["general".into()],
            exp: unix_now() + exp_in,
            ..Claims::default()
        }
    }

    #[test]
    fn a_token_is_refused_before_its_nbf() {
        let a = Authenticator::new(b"secret");
        let early = a.sign(&Claims {
            nbf: Some(unix_now() + 60),
            ..claims(600)
        });
        let e = a.verify(&early).unwrap_err();
        assert_eq!(e.code, ErrorCode::TokenInvalid);
        assert!(e.message.contains("nbf"), "{e:?}");
        let now = a.sign(&Claims {
            nbf: Some(unix_now().saturating_sub(1)),
            ..claims(600)
        });
        assert!(a.verify(&now).is_ok());
    }

    #[test]
    fn a_pinned_issuer_and_audience_are_required_and_checked() {
        let a = Authenticator::pinned(b"secret", Some("roger-ops"), Some("crew"));
        // Its own tokens carry both.
        let own = a.issue("alice", "Alice", &[], Duration::from_secs(60));
        assert!(a.verify(&own).is_ok());
        for (iss, aud, why) in [
            (None, Some("crew"), "iss"),
            (Some("mallory"), Some("crew"), "iss"),
            (Some("roger-ops"), None, "aud"),
            (Some("roger-ops"), Some("payroll"), "aud"),
        ] {
            let t = a.sign(&Claims {
                iss: iss.map(str::to_owned),
                aud: aud.map(str::to_owned),
                ..claims(60)
            });
            let e = a.verify(&t).unwrap_err();
            assert_eq!(e.code, ErrorCode::TokenInvalid, "{iss:?} {aud:?}");
            assert!(e.message.contains(why), "{e:?}");
        }
        // A server that pins nothing takes tokens with or without them.
        let open = Authenticator::new(b"secret");
        let t = open.sign(&Claims {
            iss: Some("anyone".into()),
            aud: Some("anything".into()),
            ..claims(60)
        });
        assert!(open.verify(&t).is_ok());
    }

    #[test]
    fn a_secret_under_32_bytes_cannot_sign() {
        assert!(check_secret(b"roger-e2e-test-secret").is_err());
        assert!(check_secret(&[7u8; 32]).is_ok());
        assert!(check_secret(b"").unwrap_err().contains("at least 32"));
    }
}
