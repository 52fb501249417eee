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
}

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
}

/// Mints and verifies tokens with one secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    leeway_secs: u64,
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
        }
    }

    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| AuthError::Sign(e.to_string()))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = self.leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })
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
        return Ok(secret.clone());
    }
    let path = data_dir.join("auth-secret");
    let io_err = |source| AuthError::SecretFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => {
            return Ok(SecretString::from(secret.trim().to_string()));
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

    #[test]
    fn the_generated_secret_is_kept_between_calls() {
        let dir = tempfile::tempdir().unwrap();
        let first = resolve_secret(None, dir.path()).unwrap();
        let second = resolve_secret(None, dir.path()).unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
    }
}
