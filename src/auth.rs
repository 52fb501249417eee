//! Signed tokens: who is calling (learner, mentor, course team, admin), minted and verified
//! with an HS256 shared secret.
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("cannot read or create the secret file {path}: {source}")]
    SecretFile {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot sign token: {0}")]
    Sign(String),
    #[error("the auth secret has {bytes} bytes; at least {MIN_SECRET_BYTES} are required")]
    WeakSecret { bytes: usize },
}

/// The shortest HS256 secret accepted: shorter ones can be brute-forced offline from one token.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Learner,
    Mentor,
    CourseTeam,
    Admin,
    /// The course platform itself: writes profiles and project files for any learner.
    Service,
}

/// The claims inside a Companion token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The subject: a learner, mentor or staff id.
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub course: Option<String>,
    pub iat: u64,
    pub exp: u64,
    /// An anonymous visitor of the demo page: a learner of their own, with a random id, who
    /// may chat but never store files (uploads, git imports, attachments kept in a project).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub demo: bool,
    /// Who minted the token; checked when `auth.issuer` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Who the token is for; checked when `auth.audience` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// What a token must say besides its signature and expiry: the issuer and audience (each
/// checked only when configured, and stamped on the tokens this service mints), and the
/// longest lifetime (`exp - iat`) accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenPolicy {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// `None`: any lifetime.
    pub max_lifetime_secs: Option<u64>,
}

/// Mints and verifies tokens with one secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    leeway_secs: u64,
    policy: TokenPolicy,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    pub fn new(secret: &SecretString, leeway_secs: u64) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            leeway_secs,
            policy: TokenPolicy::default(),
        }
    }

    /// The same keys, verifying (and minting) under `policy`.
    pub fn with_policy(self, policy: TokenPolicy) -> Self {
        Self { policy, ..self }
    }

    /// Signs `claims`, stamped with the configured issuer and audience where they have none.
    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        let mut claims = claims.clone();
        if claims.iss.is_none() {
            claims.iss = self.policy.issuer.clone();
        }
        if claims.aud.is_none() {
            claims.aud = self.policy.audience.clone();
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Sign(e.to_string()))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = self.leeway_secs;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.policy.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.policy.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // No audience configured: one in the token is not ours to judge.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        if let Some(max) = self.policy.max_lifetime_secs {
            let lifetime = claims.exp.saturating_sub(claims.iat);
            if lifetime > max {
                return Err(AuthError::Invalid(format!(
                    "token lifetime of {lifetime} s exceeds the maximum of {max} s"
                )));
            }
        }
        Ok(claims)
    }
}

/// Claims for `sub` with `role`, valid from now for `ttl_secs`.
pub fn claims_for(
    role: Role,
    sub: &str,
    name: Option<String>,
    course: Option<String>,
    ttl_secs: u64,
) -> Claims {
    let now = unix_now();
    Claims {
        sub: sub.to_string(),
        role,
        name,
        course,
        iat: now,
        exp: now + ttl_secs,
        demo: false,
        iss: None,
        aud: None,
    }
}

/// A demo visitor's claims: a learner of their own with a random, unguessable id under
/// `prefix` (`demo-3f2a…`), valid for `ttl_secs`.
pub fn demo_claims(prefix: &str, name: &str, ttl_secs: u64) -> Claims {
    let id = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
    Claims {
        demo: true,
        ..claims_for(Role::Learner, &id, Some(name.to_string()), None, ttl_secs)
    }
}

impl Claims {
    /// An anonymous demo visitor (see [`Claims::demo`]).
    pub fn is_demo(&self) -> bool {
        self.demo
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The configured secret, or the one kept in `<data_dir>/auth-secret` (created on first use).
pub fn resolve_secret(
    configured: Option<&SecretString>,
    data_dir: &Path,
) -> Result<SecretString, AuthError> {
    if let Some(secret) = configured {
        check_secret(secret)?;
        return Ok(secret.clone());
    }
    let path = data_dir.join("auth-secret");
    let io_err = |source| AuthError::SecretFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => {
            let secret = SecretString::from(secret.trim().to_string());
            check_secret(&secret)?;
            return Ok(secret);
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(io_err)?;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, &secret).map_err(io_err)?;
    Ok(SecretString::from(secret))
}

/// Refuses a secret shorter than [`MIN_SECRET_BYTES`].
pub fn check_secret(secret: &SecretString) -> Result<(), AuthError> {
    let bytes = secret.expose_secret().len();
    if bytes < MIN_SECRET_BYTES {
        return Err(AuthError::WeakSecret { bytes });
    }
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&SecretString::from("test-secret".to_string()), 0)
    }

    #[test]
    fn a_minted_token_verifies_to_the_same_claims() {
        let claims = claims_for(Role::Learner, "ada", Some("Ada".into()), None, 60);
        let token = keys().mint(&claims).unwrap();
        assert_eq!(keys().verify(&token).unwrap(), claims);
    }

    #[test]
    fn an_expired_token_is_refused_as_expired() {
        let mut claims = claims_for(Role::Learner, "ada", None, None, 0);
        claims.exp = unix_now() - 120;
        let token = keys().mint(&claims).unwrap();
        assert!(matches!(keys().verify(&token), Err(AuthError::Expired)));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let other = TokenKeys::new(&SecretString::from("other".to_string()), 0);
        let token = other
            .mint(&claims_for(Role::Admin, "eve", None, None, 60))
            .unwrap();
        assert!(matches!(keys().verify(&token), Err(AuthError::Invalid(_))));
    }

    fn policy(issuer: Option<&str>, audience: Option<&str>, max: Option<u64>) -> TokenPolicy {
        TokenPolicy {
            issuer: issuer.map(str::to_string),
            audience: audience.map(str::to_string),
            max_lifetime_secs: max,
        }
    }

    #[test]
    fn a_configured_issuer_and_audience_are_required_and_checked() {
        let strict = keys().with_policy(policy(Some("platform"), Some("companion"), None));
        let claims = claims_for(Role::Learner, "ada", None, None, 60);
        // Minted here: stamped with both, and accepted.
        let token = strict.mint(&claims).unwrap();
        let verified = strict.verify(&token).unwrap();
        assert_eq!(verified.iss.as_deref(), Some("platform"));
        assert_eq!(verified.aud.as_deref(), Some("companion"));
        // Without them, or with others: refused.
        let bare = keys().mint(&claims).unwrap();
        assert!(matches!(strict.verify(&bare), Err(AuthError::Invalid(_))));
        let other = keys()
            .with_policy(policy(Some("elsewhere"), Some("companion"), None))
            .mint(&claims)
            .unwrap();
        assert!(matches!(strict.verify(&other), Err(AuthError::Invalid(_))));
        let other = keys()
            .with_policy(policy(Some("platform"), Some("another-app"), None))
            .mint(&claims)
            .unwrap();
        assert!(matches!(strict.verify(&other), Err(AuthError::Invalid(_))));
        // Not configured: a token's own `aud` is not judged.
        assert!(keys().verify(&token).is_ok());
    }

    #[test]
    fn a_token_living_longer_than_the_maximum_is_refused() {
        let capped = keys().with_policy(policy(None, None, Some(3600)));
        let short = keys()
            .mint(&claims_for(Role::Admin, "root", None, None, 3600))
            .unwrap();
        assert!(capped.verify(&short).is_ok());
        let long = keys()
            .mint(&claims_for(
                Role::Admin,
                "root",
                None,
                None,
                10 * 365 * 86_400,
            ))
            .unwrap();
        let err = capped.verify(&long).unwrap_err().to_string();
        assert!(err.contains("lifetime"), "{err}");
    }

    #[test]
    fn a_secret_shorter_than_32_bytes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = SecretString::from("short".to_string());
        let err = resolve_secret(Some(&short), dir.path()).unwrap_err();
        assert!(matches!(err, AuthError::WeakSecret { bytes: 5 }), "{err}");
        std::fs::write(dir.path().join("auth-secret"), "tiny\n").unwrap();
        assert!(resolve_secret(None, dir.path()).is_err());
        let long = SecretString::from("x".repeat(32));
        assert!(resolve_secret(Some(&long), dir.path()).is_ok());
    }

    #[test]
    fn each_demo_visitor_is_a_learner_of_its_own() {
        let a = demo_claims("demo-", "Demo Learner", 600);
        let b = demo_claims("demo-", "Demo Learner", 600);
        assert_ne!(a.sub, b.sub);
        assert!(a.sub.starts_with("demo-") && a.sub.len() > 20, "{}", a.sub);
        assert!(a.is_demo() && a.role == Role::Learner);
        let verified = keys().verify(&keys().mint(&a).unwrap()).unwrap();
        assert!(verified.is_demo());
        assert!(!claims_for(Role::Learner, "ada", None, None, 60).is_demo());
    }

    #[test]
    fn the_generated_secret_is_kept_between_calls() {
        let dir = tempfile::tempdir().unwrap();
        let first = resolve_secret(None, dir.path()).unwrap();
        let second = resolve_secret(None, dir.path()).unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
    }
}
