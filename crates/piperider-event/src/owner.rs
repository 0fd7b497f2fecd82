//! Proof that a request comes from the owner of a user id, so that only the
//! person can delete or read what is held about them.
//!
//! The profile keeps a secret beside `user_id`: an Ed25519 signing key,
//! which never leaves the machine. Every event carries its public key
//! (`owner_key`); the backend binds a user id to the key of the first event
//! stored for it, and never rebinds it. A deletion or access request
//! carries a proof: the signature of [`proof_message`] (the action, the
//! user id and the time), which the backend checks against the bound key.
//! Knowing a user id is not enough, and an outsider cannot bind a user id
//! to their own key unless they send an event with it before its owner
//! ever did, when the id is known to no one else. A user id that has no
//! bound key (CI pseudonyms, which are computed, carry none) cannot be
//! deleted or read through the API at all.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::{UserId, Violation};

/// How far a proof's time may lie from the receiver's clock, either way.
/// A captured proof can be replayed only within it, and only for the same
/// action on the same user id.
pub const PROOF_WINDOW: TimeDelta = TimeDelta::minutes(15);

/// What the prefix of the `Authorization` header says: a proof follows.
pub const PROOF_SCHEME: &str = "PipeRider-Owner";

/// Lowercase hex digits of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let bytes = s.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The owner's public key: an Ed25519 public key as 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OwnerKey(String);

const OWNER_KEY_DOC: &str = "The Ed25519 public key of the user's profile secret, 64 lowercase hex digits: deletion and access requests for this user id must be signed by its secret. The first stored event that carries one binds it to the user id for good. Absent in CI, where there is no profile.";

impl OwnerKey {
    /// The key as sent: 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn verifying(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&unhex::<32>(&self.0)?).ok()
    }

    /// Checks that `proof` was made by this key's secret for `action` on
    /// `user_id`, within [`PROOF_WINDOW`] of `now`.
    pub fn verify(
        &self,
        action: OwnerAction,
        user_id: &UserId,
        proof: &OwnerProof,
        now: DateTime<Utc>,
    ) -> Result<(), ProofError> {
        let skew = now.timestamp().abs_diff(proof.at);
        if skew > PROOF_WINDOW.num_seconds().unsigned_abs() {
            return Err(ProofError::OutOfWindow);
        }
        let key = self.verifying().ok_or(ProofError::Mismatch)?;
        let signature = unhex::<64>(&proof.signature)
            .map(|s| Signature::from_bytes(&s))
            .ok_or(ProofError::Mismatch)?;
        key.verify_strict(
            proof_message(action, user_id, proof.at).as_bytes(),
            &signature,
        )
        .map_err(|_| ProofError::Mismatch)
    }
}

impl TryFrom<String> for OwnerKey {
    type Error = Violation;
    fn try_from(s: String) -> Result<Self, Violation> {
        // The form only: a key that is no curve point verifies nothing.
        match unhex::<32>(&s) {
            Some(_) => Ok(OwnerKey(s)),
            None => Err(Violation::new(".", "must match ^[0-9a-f]{64}$")),
        }
    }
}

impl From<OwnerKey> for String {
    fn from(key: OwnerKey) -> String {
        key.0
    }
}

impl fmt::Display for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerKey({})", self.0)
    }
}

impl JsonSchema for OwnerKey {
    fn schema_name() -> Cow<'static, str> {
        "OwnerKey".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": OWNER_KEY_DOC,
        })
    }
}

/// What a proof allows: one action on one user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerAction {
    /// Delete everything held about the user (`POST /v1/deletion-requests`).
    Delete,
    /// Read everything held about the user (`GET /v1/users/{user_id}`).
    Read,
}

impl OwnerAction {
    /// The action's name inside the signed message, so that a proof made
    /// to read cannot be replayed to delete.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerAction::Delete => "delete",
            OwnerAction::Read => "read",
        }
    }
}

/// The text a proof signs: a fixed first line, the action, the user id and
/// the time in seconds since the epoch, one per line.
pub fn proof_message(action: OwnerAction, user_id: &UserId, at: i64) -> String {
    format!(
        "piperider-telemetry owner proof v1\n{}\n{}\n{at}",
        action.as_str(),
        user_id.as_str()
    )
}

/// The owner's secret: an Ed25519 signing key, kept in the profile as 64
/// lowercase hex digits and never sent anywhere.
#[derive(Clone)]
pub struct OwnerSecret(SigningKey);

impl OwnerSecret {
    /// A fresh secret from the operating system's random source.
    pub fn random() -> Result<OwnerSecret, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(OwnerSecret(SigningKey::from_bytes(&seed)))
    }

    /// The secret written as [`OwnerSecret::to_hex`] does; `None` for
    /// anything else.
    pub fn from_hex(s: &str) -> Option<OwnerSecret> {
        unhex::<32>(s).map(|seed| OwnerSecret(SigningKey::from_bytes(&seed)))
    }

    /// The secret as 64 lowercase hex digits, as `profile.yml` keeps it
    /// (`telemetry_secret`). Whoever has it can delete the user's data.
    pub fn to_hex(&self) -> String {
        hex(&self.0.to_bytes())
    }

    /// The public key that events carry.
    pub fn public_key(&self) -> OwnerKey {
        OwnerKey(hex(self.0.verifying_key().as_bytes()))
    }

    /// A proof for `action` on `user_id`, made `now`.
    pub fn prove(&self, action: OwnerAction, user_id: &UserId, now: DateTime<Utc>) -> OwnerProof {
        let at = now.timestamp();
        let signature = self.0.sign(proof_message(action, user_id, at).as_bytes());
        OwnerProof {
            at,
            signature: hex(&signature.to_bytes()),
        }
    }
}

impl PartialEq for OwnerSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bytes() == other.0.to_bytes()
    }
}

impl Eq for OwnerSecret {}

impl fmt::Debug for OwnerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnerSecret(..)")
    }
}

/// A proof of ownership: when it was made and the signature of
/// [`proof_message`] by the owner's secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnerProof {
    /// When the proof was made, in seconds since the epoch (UTC); it counts
    /// within 15 minutes of the receiver's clock.
    pub at: i64,
    /// The Ed25519 signature of "piperider-telemetry owner proof v1\n{action}\n{user_id}\n{at}"
    /// (action `delete` or `read`), 128 lowercase hex digits.
    #[schemars(regex(pattern = "^[0-9a-f]{128}$"))]
    #[serde(deserialize_with = "signature_hex")]
    pub signature: String,
}

/// A signature as the schema has it (128 lowercase hex digits), or a shape
/// error that does not repeat it.
fn signature_hex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    match unhex::<64>(&s) {
        Some(_) => Ok(s),
        None => Err(serde::de::Error::custom("must match ^[0-9a-f]{128}$")),
    }
}

impl OwnerProof {
    /// The proof as an `Authorization` header value:
    /// `PipeRider-Owner at=<at>, signature=<hex>`.
    pub fn to_header(&self) -> String {
        format!(
            "{PROOF_SCHEME} at={}, signature={}",
            self.at, self.signature
        )
    }

    /// The proof in an `Authorization` header value written as
    /// [`OwnerProof::to_header`] does; `None` for anything else.
    pub fn from_header(value: &str) -> Option<OwnerProof> {
        let rest = value.trim().strip_prefix(PROOF_SCHEME)?.strip_prefix(' ')?;
        let (at, signature) = rest.trim().split_once(',')?;
        let at = at.trim().strip_prefix("at=")?.parse().ok()?;
        let signature = signature.trim().strip_prefix("signature=")?;
        unhex::<64>(signature)?;
        Some(OwnerProof {
            at,
            signature: signature.to_string(),
        })
    }
}

/// Why a proof does not count. The backend answers both the same way, as
/// it does a user id it holds no key for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The proof was made more than [`PROOF_WINDOW`] away from the
    /// receiver's clock, so a captured proof soon stops working.
    #[error("the proof's time is more than 15 minutes from the receiver's clock")]
    OutOfWindow,
    /// The signature is not the key's over this action, user and time.
    #[error("the proof does not match")]
    Mismatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_proof_counts_only_for_its_key_action_user_and_time() {
        let secret = OwnerSecret::random().unwrap();
        let key = secret.public_key();
        let user = UserId::random();
        let proof = secret.prove(OwnerAction::Delete, &user, t0());
        assert_eq!(key.verify(OwnerAction::Delete, &user, &proof, t0()), Ok(()));
        let later = t0() + PROOF_WINDOW;
        assert_eq!(
            key.verify(OwnerAction::Delete, &user, &proof, later),
            Ok(())
        );
        assert_eq!(
            key.verify(
                OwnerAction::Delete,
                &user,
                &proof,
                later + TimeDelta::seconds(1)
            ),
            Err(ProofError::OutOfWindow)
        );
        assert_eq!(
            key.verify(OwnerAction::Read, &user, &proof, t0()),
            Err(ProofError::Mismatch)
        );
        assert_eq!(
            key.verify(OwnerAction::Delete, &UserId::random(), &proof, t0()),
            Err(ProofError::Mismatch)
        );
        let other = OwnerSecret::random().unwrap().public_key();
        assert_eq!(
            other.verify(OwnerAction::Delete, &user, &proof, t0()),
            Err(ProofError::Mismatch)
        );
        let mut moved = proof.clone();
        moved.at += 1;
        assert_eq!(
            key.verify(OwnerAction::Delete, &user, &moved, t0()),
            Err(ProofError::Mismatch)
        );
    }

    #[test]
    fn secrets_keys_and_headers_read_back() {
        let secret = OwnerSecret::random().unwrap();
        let again = OwnerSecret::from_hex(&secret.to_hex()).unwrap();
        assert_eq!(again.public_key(), secret.public_key());
        assert!(OwnerSecret::from_hex("00").is_none());
        assert!(!format!("{secret:?}").contains(&secret.to_hex()));
        let key: OwnerKey = secret.public_key().to_string().try_into().unwrap();
        assert_eq!(key, secret.public_key());
        assert!(OwnerKey::try_from("ab".repeat(31)).is_err());
        assert!(OwnerKey::try_from("AB".repeat(32)).is_err());
        let proof = secret.prove(OwnerAction::Read, &UserId::random(), t0());
        assert_eq!(
            OwnerProof::from_header(&proof.to_header()),
            Some(proof.clone())
        );
        for bad in [
            "",
            "Bearer x",
            "PipeRider-Owner at=1",
            "PipeRider-Owner at=x, signature=00",
        ] {
            assert_eq!(OwnerProof::from_header(bad), None, "{bad}");
        }
    }
}
