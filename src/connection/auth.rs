//! CPython's mutual HMAC challenge (`deliver_challenge` / `answer_challenge`
//! in `multiprocessing/connection.py`), both the 3.11 form and the 3.12+ form.
//!
//! - 3.11: the challenge is `#CHALLENGE#` + 20 random bytes; the answer is
//!   the raw 16-byte HMAC-MD5 of those 20 bytes.
//! - 3.12+: the challenge is `#CHALLENGE#{sha256}` + 40 random bytes; the
//!   answer is `{sha256}` + HMAC-SHA256 of the whole message after
//!   `#CHALLENGE#` (the `{sha256}` tag included). A 16-byte untagged answer
//!   is accepted as HMAC-MD5, so 3.11 peers still get in.
//!
//! The verdict is `#WELCOME#` or `#FAILURE#`. Every handshake message is
//! limited to 256 bytes. We deliver the 3.12+ form and answer both.

use super::Connection;
use crate::error::{Error, Result};
use hmac::{Hmac, KeyInit, Mac};
use std::io::Read;
use std::time::Instant;

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in a challenge we deliver (3.12's `MESSAGE_LENGTH`).
const MESSAGE_LENGTH: usize = 40;
/// A 3.11 challenge has exactly this many bytes after `#CHALLENGE#`.
const MD5ONLY_MESSAGE_LENGTH: usize = 20;
/// A 3.11 answer is a bare HMAC-MD5 of this many bytes.
const MD5_DIGEST_LEN: usize = 16;
/// Handshake messages longer than this are refused (CPython's `recv_bytes(256)`).
const HANDSHAKE_MAX: u64 = 256;
/// The digests CPython 3.12+ allows in a `{name}` tag.
const ALLOWED: [&[u8]; 5] = [b"md5", b"sha256", b"sha384", b"sha3_256", b"sha3_384"];
const MAX_DIGEST_NAME: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digest {
    Md5,
    Sha256,
    Sha384,
}

impl Digest {
    fn from_name(name: &[u8]) -> Result<Digest> {
        match name {
            b"md5" => Ok(Digest::Md5),
            b"sha256" => Ok(Digest::Sha256),
            b"sha384" => Ok(Digest::Sha384),
            other => Err(fail(format!(
                "unsupported digest {:?}",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
        }
    }

    fn mac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        macro_rules! run {
            ($d:ty) => {{
                // HMAC accepts keys of any length: this cannot fail.
                let mut m = match <Hmac<$d> as KeyInit>::new_from_slice(key) {
                    Ok(m) => m,
                    Err(_) => return Vec::new(),
                };
                m.update(msg);
                m.finalize().into_bytes().to_vec()
            }};
        }
        match self {
            Digest::Md5 => run!(md5::Md5),
            Digest::Sha256 => run!(sha2::Sha256),
            Digest::Sha384 => run!(sha2::Sha384),
        }
    }
}

fn fail(msg: impl Into<String>) -> Error {
    Error::authentication(msg.into())
}

/// Splits a challenge or an answer into its digest (`None` = legacy MD5
/// form) and payload, as CPython's `_get_digest_name_and_payload` does.
fn digest_and_payload(message: &[u8]) -> Result<(Option<Digest>, &[u8])> {
    if message.len() == MD5ONLY_MESSAGE_LENGTH || message.len() == MD5_DIGEST_LEN {
        return Ok((None, message));
    }
    if message.first() == Some(&b'{') {
        let end = message.len().min(MAX_DIGEST_NAME + 2);
        if let Some(curly) = message[1..end]
            .iter()
            .position(|&b| b == b'}')
            .map(|p| p + 1)
        {
            let name = &message[1..curly];
            if ALLOWED.contains(&name) {
                return Ok((Some(Digest::from_name(name)?), &message[curly + 1..]));
            }
        }
    }
    Err(fail(
        "unsupported message length, missing digest prefix, or unsupported digest",
    ))
}

fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut v)?;
    Ok(v)
}

/// Receives one handshake message; protocol violations become
/// [`Error::AuthenticationFailed`], timeouts and I/O errors stay as they are.
fn recv_handshake(conn: &Connection, deadline: Option<Instant>) -> Result<Vec<u8>> {
    conn.recv_bytes_limited(deadline, HANDSHAKE_MAX)
        .map_err(|e| match e {
            Error::MessageTooLarge { len, .. } => {
                fail(format!("handshake message of {len} bytes is too long"))
            }
            Error::Codec(c) => Error::AuthenticationFailed(crate::error::AuthError::with_source(
                "the peer does not speak the handshake protocol",
                c,
            )),
            Error::Closed => fail("peer closed the connection during the handshake"),
            e => e,
        })
}

/// Server half: challenge the peer and check its answer (CPython's
/// `deliver_challenge`, 3.12+ form).
pub(crate) fn deliver_challenge(
    conn: &Connection,
    authkey: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    let mut message = b"{sha256}".to_vec();
    message.extend_from_slice(&random_bytes(MESSAGE_LENGTH)?);
    let mut challenge = CHALLENGE.to_vec();
    challenge.extend_from_slice(&message);
    conn.send_bytes(&challenge)?;
    let response = recv_handshake(conn, deadline)?;
    match verify(authkey, &message, &response) {
        Ok(()) => conn.send_bytes(WELCOME),
        Err(e) => {
            // Best effort: the peer may already be gone.
            let _ = conn.send_bytes(FAILURE);
            Err(e)
        }
    }
}

/// CPython's `_verify_challenge`.
fn verify(authkey: &[u8], message: &[u8], response: &[u8]) -> Result<()> {
    let (digest, mac) = digest_and_payload(response)?;
    let digest = digest.unwrap_or(Digest::Md5);
    let expected = digest.mac(authkey, message);
    if expected.len() != mac.len() {
        return Err(fail(format!(
            "expected {} of length {}, got {}",
            digest.name(),
            expected.len(),
            mac.len()
        )));
    }
    // Constant-time comparison.
    let diff = expected
        .iter()
        .zip(mac)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(fail("digest received was wrong"));
    }
    Ok(())
}

/// Client half: answer the peer's challenge (CPython's `answer_challenge`,
/// either form).
pub(crate) fn answer_challenge(
    conn: &Connection,
    authkey: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    let message = recv_handshake(conn, deadline)?;
    let Some(message) = message.strip_prefix(CHALLENGE) else {
        return Err(fail("protocol error: expected a challenge"));
    };
    if message.len() < MD5ONLY_MESSAGE_LENGTH {
        return Err(fail(format!(
            "challenge too short: {} bytes",
            message.len()
        )));
    }
    let answer = match digest_and_payload(message)?.0 {
        None => Digest::Md5.mac(authkey, message),
        Some(d) => {
            let mut a = format!("{{{}}}", d.name()).into_bytes();
            a.extend_from_slice(&d.mac(authkey, message));
            a
        }
    };
    conn.send_bytes(&answer)?;
    let verdict = recv_handshake(conn, deadline)?;
    if verdict != WELCOME {
        return Err(fail("digest sent was rejected"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2104_md5_vector() {
        // RFC 2104 test case 2.
        let mac = Digest::Md5.mac(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "750c783e6ab0b503eaa86e310a5db738");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Answers a fixed challenge over a socketpair and returns the bytes sent.
    fn answer_to(challenge_tail: &[u8]) -> Vec<u8> {
        let (server, client) = crate::connection::Pipe::duplex().unwrap();
        let mut c = CHALLENGE.to_vec();
        c.extend_from_slice(challenge_tail);
        server.send_bytes(&c).unwrap();
        server.send_bytes(WELCOME).unwrap();
        answer_challenge(&client, b"k", None).unwrap();
        server.recv_bytes().unwrap()
    }

    #[test]
    fn answers_match_cpython_bytes() {
        // Values from python3: hmac.new(b'k', msg, name).hexdigest()
        let mut modern = b"{sha256}".to_vec();
        modern.extend(0u8..40);
        let a = answer_to(&modern);
        assert_eq!(&a[..8], b"{sha256}");
        assert_eq!(
            hex(&a[8..]),
            "e2d18d2266efaf3d644ed631dfa02c401ec26e092bef5993514fbbe8a5cd1f7e"
        );
        let legacy: Vec<u8> = (0u8..20).collect();
        assert_eq!(hex(&answer_to(&legacy)), "b5b4bbed3ac433b774f3d4f6736f72fa");
    }

    #[test]
    fn verify_accepts_each_form_and_rejects_wrong_ones() {
        let mut msg = b"{sha256}".to_vec();
        msg.extend(0u8..40);
        let sha = Digest::Sha256.mac(b"k", &msg);
        let mut tagged = b"{sha256}".to_vec();
        tagged.extend_from_slice(&sha);
        assert!(verify(b"k", &msg, &tagged).is_ok());
        // A 3.11 client answers with a bare HMAC-MD5 of the whole message.
        assert!(verify(b"k", &msg, &Digest::Md5.mac(b"k", &msg)).is_ok());
        let mut md5_tagged = b"{md5}".to_vec();
        md5_tagged.extend_from_slice(&Digest::Md5.mac(b"k", &msg));
        assert!(verify(b"k", &msg, &md5_tagged).is_ok());
        assert!(verify(b"other", &msg, &tagged).is_err());
        tagged.pop();
        assert!(verify(b"k", &msg, &tagged).is_err());
    }

    #[test]
    fn digest_prefix_parsing() {
        assert_eq!(digest_and_payload(&[7u8; 20]).unwrap().0, None);
        assert_eq!(digest_and_payload(&[7u8; 16]).unwrap().0, None);
        assert_eq!(
            digest_and_payload(b"{sha256}0123456789abcdef0123")
                .unwrap()
                .0,
            Some(Digest::Sha256)
        );
        assert!(digest_and_payload(b"{sha3_256}0123456789abcdef0123").is_err());
        assert!(digest_and_payload(b"{nope}0123456789abcdef012345").is_err());
        assert!(digest_and_payload(b"0123456789abcdef0123456").is_err());
    }
}
