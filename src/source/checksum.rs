//! SHA-256 of a model: the expected value's syntax, hashing as the body
//! streams, and the comparison.
//!
//! The digest is ring's (already linked for TLS by rustls), so no new crate
//! and no home-made cryptography. Expected values come from the assignment
//! (`sha256`), the queue manager's job (`sha256`) or an `X-Checksum-Sha256`
//! response header: 64 hex digits, either case.

/// A parsed SHA-256: 32 bytes.
pub type Sha256 = [u8; 32];

/// The SHA-256 of `data` in one go.
pub fn sha256(data: &[u8]) -> Sha256 {
    let mut h = Hasher::new();
    h.update(data);
    h.finish()
}

/// Incremental SHA-256.
pub struct Hasher(ring::digest::Context);

impl Hasher {
    pub fn new() -> Self {
        Hasher(ring::digest::Context::new(&ring::digest::SHA256))
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> Sha256 {
        let mut out = [0u8; 32];
        let digest = self.0.finish();
        for (o, d) in out.iter_mut().zip(digest.as_ref()) {
            *o = *d;
        }
        out
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new()
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 15] {
            out.push(char::from(
                DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    out
}

/// Parses 64 hex digits (surrounding spaces allowed); `Err` says why, never
/// echoing more than the first 80 characters.
pub fn parse(text: &str) -> Result<Sha256, String> {
    let t = text.trim();
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{:?} is not a sha256 (expected 64 hex digits)",
            t.chars().take(80).collect::<String>()
        ));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let pair = t.get(2 * i..2 * i + 2).unwrap_or("00");
        *o = u8::from_str_radix(pair, 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FIPS 180-2 / NIST test vectors.
    #[test]
    fn known_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut h = Hasher::new();
        for chunk in b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".chunks(7) {
            h.update(chunk);
        }
        assert_eq!(
            hex(&h.finish()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn parse_accepts_hex_of_either_case_only() {
        let lower = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(parse(lower).unwrap(), sha256(b"abc"));
        assert_eq!(
            parse(&format!(" {} ", lower.to_uppercase())).unwrap(),
            sha256(b"abc")
        );
        for bad in [
            "",
            "abc",
            &lower[1..],
            &format!("{lower}0"),
            &lower.replace('a', "g"),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
