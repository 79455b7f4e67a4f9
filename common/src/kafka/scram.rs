//! The client side of SASL SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677),
//! as a network-free state machine that [`super::conn::Conn`] drives over Kafka's
//! SaslAuthenticate:
//!
//! 1. [`ScramClient::client_first`]: `n,,n=<user>,r=<client nonce>` (no channel
//!    binding, no authorization identity; `=` and `,` in the user escaped as
//!    `=3D` and `=2C`);
//! 2. [`ScramClient::server_first`] reads the broker's `r=…,s=…,i=…` and answers
//!    `c=biws,r=<nonce>,p=<proof>`;
//! 3. [`ScramClientFinal::server_final`] reads the broker's `v=<signature>` (or
//!    `e=<error>`).
//!
//! What it checks of the server: each message is parsed strictly by the RFC 5802
//! grammar (attributes in their order, no mandatory extension `m=`, the salt in
//! canonical base64, the iteration count a plain positive number; well-formed
//! optional extensions after the defined attributes are ignored, as the RFC asks);
//! the server nonce must extend the client's; the iteration count must be between
//! [`MIN_ITERATIONS`] (RFC 7677's minimum, also Kafka's) and [`MAX_ITERATIONS`] (a
//! bound on the work a broker can make the client do); and the server signature is
//! compared in constant time, so a server that does not hold the user's server key
//! (an impostor) is refused. The nonce comes from [`ring::rand::SystemRandom`];
//! PBKDF2, HMAC and the hashes from `ring`.

use std::fmt;
use std::num::NonZeroU32;

use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

/// The fewest PBKDF2 iterations accepted (RFC 7677 §4; Kafka's minimum too).
pub const MIN_ITERATIONS: u32 = 4096;
/// The most PBKDF2 iterations accepted: a broker must not make the client spend
/// seconds of CPU per connection.
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// Random bytes in a client nonce (base64: 32 printable characters).
const NONCE_BYTES: usize = 24;
/// `c=` of the client-final message: base64 of the GS2 header `n,,` (no channel
/// binding, no authorization identity).
const CHANNEL_BINDING: &str = "biws";
/// The longest piece of a server message quoted in an error.
const SHOWN_CHARS: usize = 120;

/// The hash of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }

    /// Bytes of the hash's output (and of SaltedPassword).
    fn len(self) -> usize {
        self.digest().output_len()
    }
}

/// What went wrong in a SCRAM exchange: mostly what the server sent wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error(
        "the username is empty or contains a NUL character, which SCRAM cannot carry: set a username"
    )]
    Username,
    #[error("the client nonce must be printable ASCII without commas")]
    ClientNonce,
    #[error("the system's random number generator failed: no nonce for SCRAM")]
    Random,
    #[error("the server's {message} message is not valid SCRAM ({why}): `{got}`")]
    Malformed {
        /// `server-first` or `server-final`.
        message: &'static str,
        why: String,
        /// The message, control characters escaped, cut at 120 characters.
        got: String,
    },
    #[error(
        "the server requires a SCRAM extension (`m=`) this client does not know: it cannot authenticate to this server"
    )]
    MandatoryExtension,
    #[error(
        "the server's nonce does not extend the one this client sent: a broken server, or someone in the middle; not authenticating"
    )]
    NonceMismatch,
    #[error(
        "the server asks for {0} PBKDF2 iterations, fewer than the {MIN_ITERATIONS} RFC 7677 requires: have the user's SCRAM credentials re-created with at least {MIN_ITERATIONS} iterations"
    )]
    TooFewIterations(u32),
    #[error(
        "the server asks for {0} PBKDF2 iterations, more than the {MAX_ITERATIONS} this client computes: have the user's SCRAM credentials re-created with fewer iterations"
    )]
    TooManyIterations(String),
    #[error("the server refused the authentication: `e={0}`")]
    Server(String),
    #[error(
        "the server's signature does not prove it knows the user's SCRAM credentials: a server impersonating the real one, or a broken server; not trusting this connection"
    )]
    ServerSignature,
}

/// A SCRAM exchange before the server's first message.
pub struct ScramClient {
    hash: ScramHash,
    password: Vec<u8>,
    nonce: String,
    /// `n=<saslname>,r=<nonce>`: the client-first message without its GS2 header.
    client_first_bare: String,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.hash.name())
            .field("client_first_bare", &self.client_first_bare)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl ScramClient {
    /// An exchange for `username` with `password` and the client nonce `nonce`
    /// (printable ASCII without commas; [`ScramClient::with_random_nonce`] makes
    /// one).
    ///
    /// Names and passwords are not SASLprep-normalized (RFC 4013), as Kafka's own
    /// clients and its credential tooling do not normalize them either: the
    /// username is sent as its UTF-8 text (only `=` and `,` escaped); an ASCII
    /// password is used as it is (SASLprep would leave printable ASCII unchanged);
    /// a non-ASCII password is used as its UTF-8 bytes, as Kafka's Java client and
    /// librdkafka do. So a password that SASLprep would change (a no-break space,
    /// a compatibility character) matches the credentials a Kafka broker stored
    /// for it, but would not match those of a server applying strict SASLprep.
    pub fn new(
        hash: ScramHash,
        username: &str,
        password: &str,
        nonce: &str,
    ) -> Result<ScramClient, ScramError> {
        if username.is_empty() || username.contains('\0') {
            return Err(ScramError::Username);
        }
        if nonce.is_empty() || !nonce.bytes().all(printable) {
            return Err(ScramError::ClientNonce);
        }
        let client_first_bare = format!("n={},r={nonce}", sasl_name(username));
        Ok(ScramClient {
            hash,
            password: password.as_bytes().to_vec(),
            nonce: nonce.to_owned(),
            client_first_bare,
        })
    }

    /// [`ScramClient::new`] with a nonce of 24 random bytes from the system's
    /// generator, in base64.
    pub fn with_random_nonce(
        hash: ScramHash,
        username: &str,
        password: &str,
    ) -> Result<ScramClient, ScramError> {
        let mut bytes = [0u8; NONCE_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| ScramError::Random)?;
        ScramClient::new(hash, username, password, &base64_encode(&bytes))
    }

    /// The client-first message: `n,,n=<saslname>,r=<nonce>`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Read the server-first message (`r=…,s=…,i=…`) and compute the answer,
    /// [`ScramClientFinal::message`]. Runs PBKDF2: up to [`MAX_ITERATIONS`] HMACs.
    pub fn server_first(self, msg: &[u8]) -> Result<ScramClientFinal, ScramError> {
        let first = parse_server_first(msg)?;
        if first.nonce.len() <= self.nonce.len() || !first.nonce.starts_with(&self.nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let hash = self.hash;
        let iterations =
            NonZeroU32::new(first.iterations).ok_or(ScramError::TooFewIterations(0))?;
        let mut salted = [0u8; 64];
        let salted = &mut salted[..hash.len()];
        pbkdf2::derive(
            hash.pbkdf2(),
            iterations,
            &first.salt,
            &self.password,
            salted,
        );
        let salted = hmac::Key::new(hash.hmac(), salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(hash.digest(), client_key.as_ref());
        let without_proof = format!("c={CHANNEL_BINDING},r={}", first.nonce);
        let auth_message =
            format!("{},{},{without_proof}", self.client_first_bare, first.text).into_bytes();
        let client_signature = hmac::sign(
            &hmac::Key::new(hash.hmac(), stored_key.as_ref()),
            &auth_message,
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        Ok(ScramClientFinal {
            message: format!("{without_proof},p={}", base64_encode(&proof)).into_bytes(),
            server_key: hmac::Key::new(hash.hmac(), server_key.as_ref()),
            auth_message,
        })
    }
}

/// A SCRAM exchange after the server's first message: the client-final message
/// to send, and what checks the server's answer to it.
pub struct ScramClientFinal {
    message: Vec<u8>,
    server_key: hmac::Key,
    auth_message: Vec<u8>,
}

impl fmt::Debug for ScramClientFinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClientFinal")
            .field("message", &String::from_utf8_lossy(&self.message))
            .finish_non_exhaustive()
    }
}

impl ScramClientFinal {
    /// The client-final message: `c=biws,r=<nonce>,p=<proof>`.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Check the server-final message: `v=<signature>` must be the server
    /// signature (compared in constant time); `e=<error>` is the server's refusal.
    pub fn server_final(self, msg: &[u8]) -> Result<(), ScramError> {
        const WHICH: &str = "server-final";
        let text = std::str::from_utf8(msg).map_err(|_| malformed(WHICH, "not UTF-8", msg))?;
        let (first, rest) = match text.split_once(',') {
            Some((first, rest)) => (first, Some(rest)),
            None => (text, None),
        };
        if let Some(error) = first.strip_prefix("e=") {
            return Err(ScramError::Server(shown(error.as_bytes())));
        }
        let Some(signature) = first.strip_prefix("v=") else {
            return Err(malformed(WHICH, "expected `v=` or `e=` first", msg));
        };
        let signature = base64_decode(signature)
            .ok_or_else(|| malformed(WHICH, "the signature `v=` is not base64", msg))?;
        if let Some(rest) = rest {
            check_extensions(WHICH, rest, msg)?;
        }
        hmac::verify(&self.server_key, &self.auth_message, &signature)
            .map_err(|_| ScramError::ServerSignature)
    }
}

/// A parsed server-first message.
#[derive(Debug)]
struct ServerFirst<'a> {
    /// The whole message (part of AuthMessage).
    text: &'a str,
    nonce: &'a str,
    salt: Vec<u8>,
    iterations: u32,
}

/// `[m=…,]r=<nonce>,s=<salt>,i=<count>[,<extensions>]`; a mandatory extension
/// (`m=`) is refused, as is an iteration count outside
/// [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`].
fn parse_server_first(msg: &[u8]) -> Result<ServerFirst<'_>, ScramError> {
    const WHICH: &str = "server-first";
    let text = std::str::from_utf8(msg).map_err(|_| malformed(WHICH, "not UTF-8", msg))?;
    if text.starts_with("m=") {
        return Err(ScramError::MandatoryExtension);
    }
    let mut parts = text.splitn(4, ',');
    let mut attribute = |name: &str| {
        parts
            .next()
            .and_then(|p| p.strip_prefix(name))
            .ok_or_else(|| malformed(WHICH, format!("expected `{name}` next"), msg))
    };
    let nonce = attribute("r=")?;
    let salt = attribute("s=")?;
    let count = attribute("i=")?;
    let rest = parts.next();
    if nonce.is_empty() || !nonce.bytes().all(printable) {
        return Err(malformed(
            WHICH,
            "the nonce `r=` is empty or not printable ASCII",
            msg,
        ));
    }
    let salt = match base64_decode(salt) {
        Some(s) if !s.is_empty() => s,
        _ => {
            return Err(malformed(
                WHICH,
                "the salt `s=` is empty or not base64",
                msg,
            ));
        }
    };
    if count.is_empty() || count.starts_with('0') || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(
            WHICH,
            "the iteration count `i=` is not a positive number",
            msg,
        ));
    }
    let iterations = match count.parse::<u32>() {
        Ok(n) if n > MAX_ITERATIONS => return Err(ScramError::TooManyIterations(n.to_string())),
        Ok(n) if n < MIN_ITERATIONS => return Err(ScramError::TooFewIterations(n)),
        Ok(n) => n,
        Err(_) => return Err(ScramError::TooManyIterations(shown(count.as_bytes()))),
    };
    if let Some(rest) = rest {
        check_extensions(WHICH, rest, msg)?;
    }
    Ok(ServerFirst {
        text,
        nonce,
        salt,
        iterations,
    })
}

/// Optional extensions after a message's defined attributes (what follows their
/// `,`): `x=value`, each named by a letter RFC 5802 does not define. They are
/// ignored (they are part of AuthMessage, so the proof and signature still cover
/// them).
fn check_extensions(which: &'static str, rest: &str, msg: &[u8]) -> Result<(), ScramError> {
    for ext in rest.split(',') {
        let b = ext.as_bytes();
        let known = b"amnrcspiev";
        if b.len() < 3 || !b[0].is_ascii_alphabetic() || b[1] != b'=' || known.contains(&b[0]) {
            return Err(malformed(
                which,
                format!("unexpected `{}` after the defined attributes", shown(b)),
                msg,
            ));
        }
    }
    Ok(())
}

/// RFC 5802's `printable`: ASCII 0x21..=0x7E except `,`.
fn printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

/// A username as a SCRAM `saslname`: `=` → `=3D`, `,` → `=2C`.
fn sasl_name(username: &str) -> String {
    let mut out = String::with_capacity(username.len());
    for c in username.chars() {
        match c {
            '=' => out.push_str("=3D"),
            ',' => out.push_str("=2C"),
            c => out.push(c),
        }
    }
    out
}

fn malformed(message: &'static str, why: impl Into<String>, msg: &[u8]) -> ScramError {
    ScramError::Malformed {
        message,
        why: why.into(),
        got: shown(msg),
    }
}

/// Server text for an error message: control characters escaped, cut at
/// [`SHOWN_CHARS`] characters.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SHOWN_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648 §4) with padding.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding, strictly: length a multiple of 4, `=` only at
/// the end, unused bits zero. `None` for anything else.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.len() / 4;
    for (q, quad) in bytes.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && q + 1 != quads) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        let [_, a, b, c] = n.to_be_bytes();
        match pad {
            0 => out.extend_from_slice(&[a, b, c]),
            1 if c == 0 => out.extend_from_slice(&[a, b]),
            2 if b == 0 && c == 0 => out.push(a),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3.
    const RFC_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    // A SCRAM-SHA-512 exchange computed independently with Python's standard
    // library (hashlib.pbkdf2_hmac("sha512", b"pencil", salt, 4096); ClientKey and
    // ServerKey by hmac.new(salted, b"Client Key"/b"Server Key", "sha512");
    // StoredKey = hashlib.sha512(ClientKey); the signatures by hmac over
    // AuthMessage = "n=user,r=<client nonce>" + "," + server-first + "," +
    // "c=biws,r=<nonce>"; base64.b64encode). The same script reproduces the
    // RFC 7677 SCRAM-SHA-256 example above. Nonce and salt are RFC 5802's.
    const SHA512_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";
    const SHA512_SERVER_FIRST: &str =
        "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
    const SHA512_CLIENT_FINAL: &str = "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=VdS8LkrURiej1tG6iX+fqCXQfUnBb//d9llXYaH+ylUbDwBUz9geyR9fC4TewskRUM2tlYSalhAT4Aay1Q5dTA==";
    const SHA512_SERVER_FINAL: &str = "v=14PAAuavk9hxBEkgB0brDxUhvWu+N16meYk+qxVNFqchR8QPohM09Y4Z6WaTCuX4C6nqMB9KIJTDm6RpSM990g==";

    // The RFC 7677 exchange with the password "p\u{e4}ss\u{a0}w\u{f6}rd" taken as
    // its UTF-8 bytes, computed by the same Python script (with SASLprep the
    // no-break space U+00A0 would become a space, and the proof would be
    // "ufpUY74ymMb0PJySpAQWOalcC482TdUi7R2MN+gVRvw=").
    const UTF8_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=prSIgT59d9ID94eqcY7rm74fYn4hSk6ChFC/ZT0grO0=";
    const UTF8_SERVER_FINAL: &str = "v=8rmuGUODtoCpYmPfRGlior0icJmogHJ56vHog4OmsjE=";

    fn rfc_client() -> ScramClient {
        ScramClient::new(ScramHash::Sha256, "user", "pencil", RFC_NONCE).unwrap()
    }

    fn rfc_final() -> ScramClientFinal {
        rfc_client()
            .server_first(RFC_SERVER_FIRST.as_bytes())
            .unwrap()
    }

    fn first_err(server_first: &str) -> ScramError {
        rfc_client()
            .server_first(server_first.as_bytes())
            .unwrap_err()
    }

    #[test]
    fn rfc7677_sha256_example() {
        let c = rfc_client();
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let f = c.server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(std::str::from_utf8(f.message()).unwrap(), RFC_CLIENT_FINAL);
        f.server_final(RFC_SERVER_FINAL.as_bytes()).unwrap();
    }

    #[test]
    fn sha512_vector_from_python() {
        let c = ScramClient::new(ScramHash::Sha512, "user", "pencil", SHA512_NONCE).unwrap();
        assert_eq!(c.client_first(), b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        let f = c.server_first(SHA512_SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(f.message()).unwrap(),
            SHA512_CLIENT_FINAL
        );
        f.server_final(SHA512_SERVER_FINAL.as_bytes()).unwrap();
    }

    #[test]
    fn non_ascii_password_is_used_as_utf8() {
        let c = ScramClient::new(
            ScramHash::Sha256,
            "user",
            "p\u{e4}ss\u{a0}w\u{f6}rd",
            RFC_NONCE,
        )
        .unwrap();
        let f = c.server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(std::str::from_utf8(f.message()).unwrap(), UTF8_CLIENT_FINAL);
        f.server_final(UTF8_SERVER_FINAL.as_bytes()).unwrap();
    }

    #[test]
    fn wrong_password_gives_another_proof_and_refuses_the_signature() {
        let c = ScramClient::new(ScramHash::Sha256, "user", "pencil!", RFC_NONCE).unwrap();
        let f = c.server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
        assert_ne!(std::str::from_utf8(f.message()).unwrap(), RFC_CLIENT_FINAL);
        assert_eq!(
            f.server_final(RFC_SERVER_FINAL.as_bytes()),
            Err(ScramError::ServerSignature)
        );
    }

    #[test]
    fn wrong_server_signature_is_refused() {
        // The SHA-256 signature with its first byte changed.
        let mut sig = base64_decode(&RFC_SERVER_FINAL[2..]).unwrap();
        sig[0] ^= 1;
        let forged = format!("v={}", base64_encode(&sig));
        assert_eq!(
            rfc_final().server_final(forged.as_bytes()),
            Err(ScramError::ServerSignature)
        );
        // Too short, and of the other mechanism's length.
        let short = format!("v={}", base64_encode(&sig[..16]));
        assert_eq!(
            rfc_final().server_final(short.as_bytes()),
            Err(ScramError::ServerSignature)
        );
        assert_eq!(
            rfc_final().server_final(SHA512_SERVER_FINAL.as_bytes()),
            Err(ScramError::ServerSignature)
        );
        let e = ScramError::ServerSignature.to_string();
        assert!(e.contains("impersonating"), "{e}");
    }

    #[test]
    fn server_final_error_is_reported() {
        let e = rfc_final().server_final(b"e=invalid-proof").unwrap_err();
        assert_eq!(e, ScramError::Server("invalid-proof".into()));
        assert!(e.to_string().contains("e=invalid-proof"), "{e}");
        // Control characters from the server are escaped.
        let e = rfc_final().server_final(b"e=bad\nthing").unwrap_err();
        assert_eq!(e, ScramError::Server("bad\\nthing".into()));
    }

    #[test]
    fn malformed_server_final_is_refused() {
        for bad in [
            &b""[..],
            b"x=1",
            b"V=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",
            b"v=***",
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,junk",
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,v=x",
            b"v=\xff",
        ] {
            let e = rfc_final().server_final(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    ScramError::Malformed {
                        message: "server-final",
                        ..
                    }
                ),
                "{:?}: {e:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // An optional extension after the signature is ignored.
        let with_ext = format!("{RFC_SERVER_FINAL},x=anything");
        rfc_final().server_final(with_ext.as_bytes()).unwrap();
    }

    #[test]
    fn server_nonce_must_extend_ours() {
        for nonce in [
            "rOprNGfwEbeRWgbNEkqX%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "XrOprNGfwEbeRWgbNEkqO",
            "rOprNGfwEbeRWgbNEkq",
            // Our nonce alone: the server added nothing.
            RFC_NONCE,
        ] {
            let first = format!("r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
            assert_eq!(first_err(&first), ScramError::NonceMismatch, "{nonce}");
        }
        assert!(
            ScramError::NonceMismatch
                .to_string()
                .contains("someone in the middle")
        );
    }

    #[test]
    fn iteration_count_is_bounded() {
        let with = |i: &str| format!("r={RFC_NONCE}srv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i={i}");
        assert_eq!(first_err(&with("4095")), ScramError::TooFewIterations(4095));
        assert_eq!(first_err(&with("1")), ScramError::TooFewIterations(1));
        assert_eq!(
            first_err(&with("1000001")),
            ScramError::TooManyIterations("1000001".into())
        );
        assert_eq!(
            first_err(&with("99999999999999999999")),
            ScramError::TooManyIterations("99999999999999999999".into())
        );
        // The bounds themselves are accepted (parsed only: no million-round PBKDF2
        // in a test).
        for ok in ["4096", "1000000"] {
            let msg = with(ok);
            let parsed = parse_server_first(msg.as_bytes()).unwrap();
            assert_eq!(parsed.iterations.to_string(), ok);
        }
        let e = ScramError::TooFewIterations(1024).to_string();
        assert!(e.contains("1024") && e.contains("at least 4096"), "{e}");
    }

    #[test]
    fn malformed_server_first_is_refused() {
        let n = format!("{RFC_NONCE}srv");
        for bad in [
            String::new(),
            "garbage".into(),
            format!("r={n}"),
            format!("r={n},s=W22ZaJ0SNY7soEsUEjb6gQ=="),
            format!("s=W22ZaJ0SNY7soEsUEjb6gQ==,r={n},i=4096"),
            format!("r={n},i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ=="),
            "r=,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".into(),
            format!("r={n},s=,i=4096"),
            format!("r={n},s=W22ZaJ0SNY7soEsUEjb6gQ,i=4096"),
            format!("r={n},s=W22ZaJ0SNY7s*EsUEjb6gQ==,i=4096"),
            format!("r={n},s=W22ZaJ0SNY7soEsUEjb6gQ==,i="),
            format!("r={n},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=04096"),
            format!("r={n},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=+4096"),
            format!("r={n},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096x"),
            format!("r={n},s=W22ZaJ0SNY7soEsUEjb6gQ==,i= 4096"),
            format!("r={n},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"),
            format!("r={n},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,junk"),
            format!("r={n},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,i=8192"),
            format!("r={n},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,m=x"),
            format!("r={n}\u{e9},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
        ] {
            let e = first_err(&bad);
            assert!(
                matches!(
                    e,
                    ScramError::Malformed {
                        message: "server-first",
                        ..
                    }
                ),
                "{bad:?}: {e:?}"
            );
        }
        let e = rfc_client().server_first(b"r=\xff").unwrap_err();
        assert!(matches!(e, ScramError::Malformed { .. }), "{e:?}");
        let e = first_err("r=abc,s=!!!!,i=4096").to_string();
        assert!(e.contains("server-first") && e.contains("salt"), "{e}");
    }

    #[test]
    fn mandatory_extension_is_refused() {
        let first = format!("m=ext,{RFC_SERVER_FIRST}");
        assert_eq!(first_err(&first), ScramError::MandatoryExtension);
    }

    #[test]
    fn optional_server_first_extension_is_ignored_but_signed() {
        // Accepted; the extension is part of AuthMessage, so the proof differs
        // from the RFC's.
        let first = format!("{RFC_SERVER_FIRST},x=1");
        let f = rfc_client().server_first(first.as_bytes()).unwrap();
        assert_ne!(std::str::from_utf8(f.message()).unwrap(), RFC_CLIENT_FINAL);
    }

    #[test]
    fn username_escaping() {
        let c = ScramClient::new(ScramHash::Sha256, "a=b,c==", "pw", "nonce").unwrap();
        assert_eq!(c.client_first(), b"n,,n=a=3Db=2Cc=3D=3D,r=nonce");
        let c = ScramClient::new(ScramHash::Sha512, "j\u{f6}rg", "pw", "nonce").unwrap();
        assert_eq!(c.client_first(), "n,,n=j\u{f6}rg,r=nonce".as_bytes());
        for bad in ["", "a\0b"] {
            assert_eq!(
                ScramClient::new(ScramHash::Sha256, bad, "pw", "n").unwrap_err(),
                ScramError::Username
            );
        }
        for bad in ["", "a,b", "a b", "\u{e9}"] {
            assert_eq!(
                ScramClient::new(ScramHash::Sha256, "u", "pw", bad).unwrap_err(),
                ScramError::ClientNonce
            );
        }
    }

    #[test]
    fn random_nonces_are_long_printable_and_distinct() {
        let a = ScramClient::with_random_nonce(ScramHash::Sha256, "u", "pw").unwrap();
        let b = ScramClient::with_random_nonce(ScramHash::Sha256, "u", "pw").unwrap();
        assert_eq!(a.nonce.len(), 32);
        assert!(a.nonce.bytes().all(printable));
        assert_eq!(base64_decode(&a.nonce).map(|n| n.len()), Some(NONCE_BYTES));
        assert_ne!(a.nonce, b.nonce);
    }

    #[test]
    fn debug_hides_the_password() {
        let c = ScramClient::new(ScramHash::Sha256, "user", "pencil", RFC_NONCE).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("pencil") && d.contains("<hidden>"), "{d}");
    }

    #[test]
    fn base64_rfc4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), coded);
            assert_eq!(base64_decode(coded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        for n in 0..all.len() {
            assert_eq!(base64_decode(&base64_encode(&all[..n])).unwrap(), &all[..n]);
        }
        for bad in [
            "Zg", "Zg=", "Zg===", "Z===", "Zh==", "Zm9=", "Zg==Zm9v", "Zm9v\n", "Zm-v", "=Zg=",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }
}
