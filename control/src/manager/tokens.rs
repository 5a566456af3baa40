//! Join tokens, Docker's shape: `SHTKN-1-<CA digest>-<secret>`. The digest lets a joining
//! agent check it talks to the right cluster before it trusts the manager's certificate; the
//! secret says which role it joins as. Rotating a role's token replaces its secret: the old
//! one is refused from then on. Secrets come from the caller (the shell draws them).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::model::Role;

const PREFIX: &str = "SHTKN-1-";

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The cluster CA certificate's digest (lower-case hex of its SHA-256).
    pub ca_digest: String,
    pub secret: String,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}-{}", self.ca_digest, self.secret)
    }
}

impl fmt::Debug for Token {
    // A token is a credential: logs show which cluster it is for, never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({PREFIX}{}-…)", self.ca_digest)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "this is not a shoal join token (they look like SHTKN-1-<digest>-<secret>): copy it again from `shoal join-token worker` on a manager"
    )]
    Malformed,
    #[error(
        "this token is for another cluster (its CA digest does not match this manager's): get one from this cluster with `shoal join-token worker`"
    )]
    OtherCluster,
    #[error(
        "this token is not valid here: it was rotated out or mistyped; get the current one with `shoal join-token worker` (or `manager`)"
    )]
    Invalid,
}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(TokenError::Malformed)?;
        let (digest, secret) = rest.split_once('-').ok_or(TokenError::Malformed)?;
        let hex = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let secret_ok = secret.len() >= 16 && secret.bytes().all(|b| b.is_ascii_alphanumeric());
        if digest.len() != 64 || !hex(digest) || !secret_ok {
            return Err(TokenError::Malformed);
        }
        Ok(Token {
            ca_digest: digest.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

/// The current token of each role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokens {
    pub worker: Token,
    pub manager: Token,
}

impl JoinTokens {
    pub fn new(ca_digest: &str, worker_secret: &str, manager_secret: &str) -> JoinTokens {
        let token = |secret: &str| Token {
            ca_digest: ca_digest.to_owned(),
            secret: secret.to_owned(),
        };
        JoinTokens {
            worker: token(worker_secret),
            manager: token(manager_secret),
        }
    }

    /// The role a presented token joins as, or why it is refused.
    pub fn check(&self, presented: &str) -> Result<Role, TokenError> {
        let token: Token = presented.parse()?;
        if token.ca_digest != self.worker.ca_digest {
            return Err(TokenError::OtherCluster);
        }
        // Both compared in full, in constant time: which role matched must not leak through
        // timing, nor how much of a secret was right.
        let worker = constant_time_eq(&token.secret, &self.worker.secret);
        let manager = constant_time_eq(&token.secret, &self.manager.secret);
        match (worker, manager) {
            (true, _) => Ok(Role::Worker),
            (_, true) => Ok(Role::Manager),
            _ => Err(TokenError::Invalid),
        }
    }

    /// Replaces the role's secret: its old token is refused from now on.
    pub fn rotate(&mut self, role: Role, secret: &str) {
        let token = match role {
            Role::Worker => &mut self.worker,
            Role::Manager => &mut self.manager,
        };
        token.secret = secret.to_owned();
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut differ = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        differ |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    differ == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn tokens() -> JoinTokens {
        JoinTokens::new(DIGEST, "workersecret0123456789", "managersecret012345678")
    }

    #[test]
    fn tokens_print_parse_and_say_which_role_they_join_as() {
        let t = tokens();
        let worker = t.worker.to_string();
        assert_eq!(worker, format!("SHTKN-1-{DIGEST}-workersecret0123456789"));
        assert_eq!(t.check(&worker), Ok(Role::Worker));
        assert_eq!(t.check(&format!(" {} \n", t.manager)), Ok(Role::Manager));
        assert!(
            !format!("{:?}", t.worker).contains("workersecret"),
            "Debug hides the secret"
        );
    }

    #[test]
    fn wrong_other_cluster_and_rotated_out_tokens_are_refused_with_the_fix() {
        let mut t = tokens();
        let old = t.worker.to_string();
        for bad in [
            "",
            "SWMTKN-1-abc-def",
            "SHTKN-1-xyz-workersecret0123456789",
            &format!("SHTKN-1-{DIGEST}-short"),
        ] {
            assert_eq!(t.check(bad), Err(TokenError::Malformed), "{bad:?}");
        }
        let other = format!("SHTKN-1-{}-workersecret0123456789", "f".repeat(64));
        assert_eq!(t.check(&other), Err(TokenError::OtherCluster));
        t.rotate(Role::Worker, "freshworkersecret98765");
        let err = t.check(&old).unwrap_err();
        assert_eq!(err, TokenError::Invalid);
        assert!(
            err.to_string().contains("rotated out") && err.to_string().contains("shoal join-token")
        );
        assert_eq!(t.check(&t.worker.to_string()), Ok(Role::Worker));
        assert_eq!(
            t.check(&t.manager.to_string()),
            Ok(Role::Manager),
            "the other role's token is untouched"
        );
    }
}
