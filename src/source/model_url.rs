//! Parsing the queue manager's base URL and vetting a job's `modelUrl`.
//!
//! A small, strict parser of our own rather than a general URL library: it
//! accepts only `http(s)://host[:port]/path` and plain relative paths, and
//! rejects anything it does not understand. Because `.` and `..` segments
//! (raw or percent-encoded), encoded slashes, backslashes, control bytes,
//! queries and fragments are all refused, a path that passes needs no
//! normalisation: what is checked is exactly what is requested.

use super::{QueueClient, SourceError};

/// `scheme://authority` plus the base path, always ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    origin: Origin,
    /// e.g. `/` or `/api/`.
    path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    https: bool,
    host: String, // lowercase
    port: u16,    // effective port
}

impl Origin {
    fn to_url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            format!("{scheme}://{}{path}", self.host)
        } else {
            format!("{scheme}://{}:{}{path}", self.host, self.port)
        }
    }
}

/// A vetted model URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub url: String,
    /// The queue manager's own origin: only then are credentials sent.
    pub same_origin: bool,
}

impl BaseUrl {
    pub(crate) fn parse(base: &str) -> Result<Self, SourceError> {
        let bad = |why: &str| SourceError::Config(format!("base url {base:?}: {why}"));
        let (origin, path) = split_absolute(base.trim()).map_err(|e| bad(&e))?;
        check_path(path, true).map_err(|e| bad(&e))?;
        let mut path = path.to_owned();
        if !path.ends_with('/') {
            path.push('/');
        }
        Ok(BaseUrl { origin, path })
    }

    /// `<base>/<rel>`, for the queue manager's own endpoints.
    pub(crate) fn join(&self, rel: &str) -> String {
        self.origin.to_url(&format!("{}{rel}", self.path))
    }
}

impl QueueClient {
    /// Turns a job's `modelUrl` into the absolute URL to download, or refuses
    /// it with [`SourceError::UnsafeModelUrl`]. Relative URLs are joined to
    /// `<base>/` and must stay under `<base>/models/`; absolute ones must name
    /// the queue manager (and stay under `models/`) or an allowed host.
    pub fn resolve_model_url(&self, model_url: &str) -> Result<String, SourceError> {
        self.resolve(model_url).map(|r| r.url)
    }

    pub(crate) fn resolve(&self, model_url: &str) -> Result<Resolved, SourceError> {
        resolve(&self.base, &self.allowed_hosts, model_url).map_err(|reason| {
            SourceError::UnsafeModelUrl {
                url: model_url.chars().take(200).collect(),
                reason,
            }
        })
    }
}

fn resolve(base: &BaseUrl, allowed: &[String], raw: &str) -> Result<Resolved, String> {
    if raw.is_empty() {
        return Err("empty".into());
    }
    if let Some(b) = raw
        .bytes()
        .find(|b| b.is_ascii_control() || !b.is_ascii() || *b == b' ' || *b == b'\\')
    {
        return Err(format!("forbidden byte 0x{b:02x}"));
    }
    if raw.contains(['?', '#']) {
        return Err("query or fragment".into());
    }
    if raw.starts_with("//") {
        return Err("scheme-relative url".into());
    }
    let models = format!("{}models/", base.path);
    // A scheme is letters before the first ':' that comes before any '/'.
    let before_slash = raw.split('/').next().unwrap_or(raw);
    if before_slash.contains(':') {
        let (origin, path) = split_absolute(raw)?;
        if base.origin.https && !origin.https {
            return Err("https downgraded to http".into());
        }
        check_path(path, false)?;
        if origin == base.origin {
            under(path, &models)?;
            return Ok(Resolved {
                url: origin.to_url(path),
                same_origin: true,
            });
        }
        let with_port = format!("{}:{}", origin.host, origin.port);
        if !allowed.iter().any(|h| *h == origin.host || *h == with_port) {
            return Err(format!("host {} not allowed", origin.host));
        }
        return Ok(Resolved {
            url: origin.to_url(path),
            same_origin: false,
        });
    }
    let path = if raw.starts_with('/') {
        raw.to_owned()
    } else {
        format!("{}{raw}", base.path)
    };
    check_path(&path, false)?;
    under(&path, &models)?;
    Ok(Resolved {
        url: base.origin.to_url(&path),
        same_origin: true,
    })
}

fn under(path: &str, prefix: &str) -> Result<(), String> {
    match path.strip_prefix(prefix) {
        Some(rest) if !rest.is_empty() => Ok(()),
        _ => Err(format!("outside {prefix}")),
    }
}

/// Splits `http(s)://host[:port]/path` into origin and path (`/` if absent).
fn split_absolute(url: &str) -> Result<(Origin, &str), String> {
    let (scheme, rest) = url.split_once("://").ok_or("not http(s)://host/...")?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        other => return Err(format!("scheme {other:?} not allowed")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err("credentials in url".into());
    }
    // `[::1]:8080` splits at the last ':'; in `[::1]` that ':' is inside the brackets.
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && (host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            || (host.starts_with('[')
                && host.ends_with(']')
                && host
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b"[]:.".contains(&b))));
    if !host_ok {
        return Err("bad host".into());
    }
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().map_err(|_| "bad port".to_owned())?
        }
        Some(_) => return Err("bad port".into()),
    };
    let origin = Origin {
        https,
        host: host.to_ascii_lowercase(),
        port,
    };
    Ok((origin, path))
}

/// Checks an absolute path segment by segment after percent-decoding.
/// `lenient_trailing` is for the base path only: `/api/` ends in an empty segment.
fn check_path(path: &str, lenient_trailing: bool) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("path must start with /".into());
    }
    if path.contains(['?', '#', '\\']) {
        return Err("query, fragment or backslash in path".into());
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            if i == last && (lenient_trailing || segments.len() == 1) {
                continue;
            }
            return Err("empty path segment".into());
        }
        let decoded = percent_decode(seg).ok_or("bad percent escape")?;
        if decoded == b"." || decoded == b".." {
            return Err("dot segment".into());
        }
        if let Some(b) = decoded
            .iter()
            .find(|b| b.is_ascii_control() || **b == b'/' || **b == b'\\')
        {
            return Err(format!("encoded byte 0x{b:02x} in path"));
        }
    }
    Ok(())
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(base: &str, allowed: &[&str], raw: &str) -> Result<String, String> {
        let base = BaseUrl::parse(base).map_err(|e| e.to_string())?;
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        resolve(&base, &allowed, raw).map(|r| r.url)
    }

    #[test]
    fn unsafe_urls_are_refused() {
        let cases = [
            "../../etc/passwd",
            "%2e%2e/",
            "%2E%2E/x",
            "models/../x",
            "models/%2e%2e/x",
            "models/./x.gcode",
            "models/a%2fb",
            "models/a%2Fb",
            "models/a%5cb",
            "models\\..\\x",
            "models/a%00.gcode",
            "models/x.gcode\0",
            "models/x.gcode?../../etc/passwd",
            "models/x.gcode#frag",
            "models/%zz",
            "models/%2",
            "models/",
            "models",
            "x.gcode",
            "/etc/passwd",
            "/models2/x.gcode",
            "http://other/models/x.gcode",
            "http://127.0.0.1:9/models/x.gcode",
            "file:///etc/passwd",
            "ftp://q.farm/models/x.gcode",
            "//evil.com/x",
            "http://user:pw@q.farm/models/x.gcode",
            "http://q.farm/etc/passwd",
            "http://q.farm/api/models/../../etc/passwd",
            "javascript:alert(1)",
            "models//x.gcode",
            "models/x y.gcode",
            "models/caf\u{e9}.gcode",
        ];
        for raw in cases {
            let got = check("http://q.farm/api", &[], raw);
            assert!(got.is_err(), "{raw:?} accepted as {got:?}");
        }
    }

    #[test]
    fn good_urls_resolve() {
        let base = "http://Q.farm:8080/api";
        let allowed = ["cdn.farm", "files.farm:9000"];
        let cases = [
            (
                "models/model-456.gcode",
                "http://q.farm:8080/api/models/model-456.gcode",
            ),
            (
                "models/sub/a%20b.gcode",
                "http://q.farm:8080/api/models/sub/a%20b.gcode",
            ),
            (
                "/api/models/m.gcode",
                "http://q.farm:8080/api/models/m.gcode",
            ),
            (
                "http://q.farm:8080/api/models/m.gcode",
                "http://q.farm:8080/api/models/m.gcode",
            ),
            (
                "https://cdn.farm/anything/m.gcode",
                "https://cdn.farm/anything/m.gcode",
            ),
            (
                "http://files.farm:9000/m.gcode",
                "http://files.farm:9000/m.gcode",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(check(base, &allowed, raw).as_deref(), Ok(want), "{raw:?}");
        }
        // The base host on another path, or an allowed host on another port.
        assert!(check(base, &allowed, "http://q.farm:8080/other/m.gcode").is_err());
        assert!(check(base, &allowed, "http://files.farm:9001/m.gcode").is_err());
    }

    #[test]
    fn https_base_refuses_http_models() {
        assert!(check("https://q.farm", &["cdn.farm"], "http://cdn.farm/m.gcode").is_err());
        assert_eq!(
            check("https://q.farm", &[], "models/m.gcode").as_deref(),
            Ok("https://q.farm/models/m.gcode")
        );
    }

    #[test]
    fn bad_base_urls_are_config_errors() {
        for base in [
            "",
            "q.farm",
            "ftp://q.farm",
            "http://",
            "http://q.farm:x",
            "http://a/../b",
            "http://q/a?b",
        ] {
            assert!(BaseUrl::parse(base).is_err(), "{base:?}");
        }
        let b = BaseUrl::parse("http://q.farm:80").unwrap();
        assert_eq!(b.join("prioritary_job"), "http://q.farm/prioritary_job");
        let b = BaseUrl::parse("http://[::1]:8080/api/").unwrap();
        assert_eq!(
            b.join("prioritary_job"),
            "http://[::1]:8080/api/prioritary_job"
        );
    }
}
