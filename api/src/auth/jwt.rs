//! User tokens: JWTs signed with `--jwt-secret` (HS256) or by an identity provider whose
//! public key is `--jwt-public-key` (RS256 or ES256, chosen by the key's type).
//!
//! A token names its algorithm in its header; only the configured one is accepted (so `none`,
//! or an HS256 token signed with the public key as secret, is refused). Required claims: `sub`,
//! `exp` and `role` (`admin`, `operator` or `viewer`); an `iat` more than a minute ahead of
//! the server's clock is refused.

use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{AuthError, Role};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY_SECS: u64 = 60;

#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
}

/// Who a valid user token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub sub: String,
    pub role: Role,
    /// When the token expires (seconds since the epoch): a live session (a Socket.IO socket)
    /// authenticated with it ends then.
    pub exp: u64,
}

impl User {
    /// The first second (since the epoch) at which the token is refused, leeway included.
    pub fn refused_from(&self) -> u64 {
        self.exp.saturating_add(LEEWAY_SECS + 1)
    }
}

impl JwtVerifier {
    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // Without `--jwt-audience` an `aud` claim is not checked (jsonwebtoken would refuse
        // every token that has one).
        validation.validate_aud = false;
        Self { key, validation }
    }

    /// Accept only tokens whose `aud` names `audience` (and that have one).
    pub fn with_audience(mut self, audience: Option<&str>) -> Self {
        if let Some(aud) = audience {
            self.validation.set_audience(&[aud]);
            self.validation.validate_aud = true;
            self.validation.required_spec_claims.insert("aud".into());
        }
        self
    }

    /// HS256 with a shared secret (at least 32 bytes, as RFC 7518 §3.2 asks).
    pub fn hs256(secret: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            secret.len() >= 32,
            "--jwt-secret must be at least 32 bytes (RFC 7518 §3.2); it has {}",
            secret.len()
        );
        Ok(Self::new(
            DecodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        ))
    }

    /// RS256 or ES256 with a PEM public key file.
    pub fn public_key(path: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("reading --jwt-public-key {}: {e}", path.display()))?;
        if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            return Ok(Self::new(key, Algorithm::RS256));
        }
        match DecodingKey::from_ec_pem(&pem) {
            Ok(key) => Ok(Self::new(key, Algorithm::ES256)),
            Err(e) => anyhow::bail!(
                "--jwt-public-key {}: neither an RSA nor an EC (P-256) public key in PEM: {e}",
                path.display()
            ),
        }
    }

    pub fn verify(&self, token: &str, now_secs: u64) -> Result<User, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(describe(e.kind(), &self.validation)))?;
        let claims = data.claims;
        if claims.iat.is_some_and(|iat| iat > now_secs + LEEWAY_SECS) {
            return Err(AuthError::Invalid("token's `iat` is in the future".into()));
        }
        let role = Role::parse(&claims.role).ok_or_else(|| {
            AuthError::Invalid(format!(
                "token's role {:?} is not admin, operator or viewer",
                claims.role
            ))
        })?;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("token's `sub` is empty".into()));
        }
        Ok(User {
            sub: claims.sub,
            role,
            exp: claims.exp,
        })
    }
}

/// A refusal's reason, without echoing any part of the token.
fn describe(kind: &ErrorKind, validation: &Validation) -> String {
    match kind {
        ErrorKind::InvalidSignature => "token signature is not valid".into(),
        ErrorKind::ExpiredSignature => "token has expired".into(),
        ErrorKind::ImmatureSignature => "token is not valid yet (`nbf`)".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => format!(
            "token algorithm is not the accepted {:?}",
            validation.algorithms
        ),
        ErrorKind::InvalidAudience => "token's `aud` is not this server's --jwt-audience".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token lacks the `{claim}` claim"),
        ErrorKind::Json(e) => format!("token header or claims are not valid: {e}"),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "token is not a well-formed JWT".into()
        }
        _ => "token is not valid".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use std::process::Command;

    fn now() -> u64 {
        chrono::Utc::now().timestamp() as u64
    }

    fn openssl(args: &[&str]) {
        let ok = Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl {args:?}");
    }

    /// A private key (PKCS#8) and its public key, in PEM, made by the openssl CLI.
    fn keypair(dir: &Path, kind: &str) -> (Vec<u8>, std::path::PathBuf) {
        let (key, public) = (
            dir.join(format!("{kind}.key")),
            dir.join(format!("{kind}.pub")),
        );
        let (k, p) = (key.to_str().unwrap(), public.to_str().unwrap());
        match kind {
            "rsa" => openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                k,
            ]),
            _ => openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                k,
            ]),
        }
        openssl(&["pkey", "-in", k, "-pubout", "-out", p]);
        (std::fs::read(&key).unwrap(), public)
    }

    /// `jsonwebtoken` checks `exp` against the system clock, so the claims are made from it.
    fn claims(role: &str, exp: u64) -> serde_json::Value {
        serde_json::json!({"sub": "idp-user", "role": role, "exp": exp, "iat": now()})
    }

    #[test]
    fn identity_provider_keys_verify_rs256_and_es256_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for (kind, alg) in [("rsa", Algorithm::RS256), ("ec", Algorithm::ES256)] {
            let (private, public) = keypair(dir.path(), kind);
            let verifier = JwtVerifier::public_key(&public).unwrap();
            let key = match kind {
                "rsa" => EncodingKey::from_rsa_pem(&private).unwrap(),
                _ => EncodingKey::from_ec_pem(&private).unwrap(),
            };
            let token = encode(&Header::new(alg), &claims("operator", now() + 600), &key).unwrap();
            assert_eq!(
                verifier.verify(&token, now()).unwrap(),
                User {
                    sub: "idp-user".into(),
                    role: Role::Operator,
                    exp: now() + 600,
                }
            );
            // HS256 signed with the public key's bytes as the secret: the algorithm confusion.
            let pem = std::fs::read(&public).unwrap();
            let confused = encode(
                &Header::new(Algorithm::HS256),
                &claims("admin", now() + 600),
                &EncodingKey::from_secret(&pem),
            )
            .unwrap();
            assert!(
                matches!(verifier.verify(&confused, now()), Err(AuthError::Invalid(r)) if r.contains("algorithm"))
            );
            let expired =
                encode(&Header::new(alg), &claims("operator", now() - 3600), &key).unwrap();
            assert!(
                matches!(verifier.verify(&expired, now()), Err(AuthError::Invalid(r)) if r.contains("expired"))
            );
        }
        assert!(JwtVerifier::public_key(&dir.path().join("missing.pem")).is_err());
        std::fs::write(
            dir.path().join("junk.pem"),
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        assert!(JwtVerifier::public_key(&dir.path().join("junk.pem")).is_err());
    }

    #[test]
    fn an_audience_is_checked_only_when_configured() {
        let secret = "a-secret-of-at-least-thirty-two-bytes!";
        let token = |aud: &str| {
            let mut c = claims("viewer", now() + 600);
            c["aud"] = aud.into();
            encode(
                &Header::new(Algorithm::HS256),
                &c,
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap()
        };
        let open = JwtVerifier::hs256(secret).unwrap();
        assert!(open.verify(&token("anything"), now()).is_ok());
        let pinned = JwtVerifier::hs256(secret)
            .unwrap()
            .with_audience(Some("aemos"));
        assert!(pinned.verify(&token("aemos"), now()).is_ok());
        assert!(
            matches!(pinned.verify(&token("billing"), now()), Err(AuthError::Invalid(r)) if r.contains("aud"))
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(JwtVerifier::hs256("short")
            .unwrap_err()
            .to_string()
            .contains("at least 32 bytes"));
    }
}
