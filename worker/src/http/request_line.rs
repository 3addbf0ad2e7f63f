//! The request line and the host, beyond what httparse checks: which
//! refused lines are a 505 rather than a 400 (RFC 9112 3), the authority
//! of an absolute-form target, and the host a request names (RFC 9110
//! 4.2.1, RFC 9112 3.2).

use super::request::Parsed;
use super::response::Status;

/// The host a request names: the absolute-form target's authority
/// (`target_host`) if it has one, else the Host header, normalised
/// (`normalize_host`). `Err` is a 400: a host that cannot be one, or an
/// http(s) URI with an empty host, which its recipient must reject (RFC
/// 9110 4.2.1). An empty Host header is allowed beside a target with no
/// authority (RFC 9112 3.2), and names no host.
pub(crate) fn request_host(
    target_host: Option<&str>,
    host_header: Option<&[u8]>,
) -> Result<Option<String>, ()> {
    match (target_host, host_header) {
        (Some(authority), _) => match normalize_host(authority.as_bytes())? {
            Some(h) => Ok(Some(h)),
            None => Err(()),
        },
        (None, Some(raw)) => normalize_host(raw),
        (None, None) => Ok(None),
    }
}

/// `http://authority/path?q` → (`authority`, `/path?q`); `None` when the
/// target is not in absolute form.
pub(super) fn split_absolute_form(target: &str) -> Option<(&str, String)> {
    let rest = ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &target[scheme.len()..])
    })?;
    Some(match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        // `http://host?q` has the empty path, which is `/`.
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    })
}

/// A Host value → lowercase name without port or trailing dot, `Ok(None)`
/// when empty, `Err` when it cannot be a host (which is a 400).
fn normalize_host(raw: &[u8]) -> Result<Option<String>, ()> {
    let raw = raw.trim_ascii();
    if raw.is_empty() {
        return Ok(None);
    }
    let (name, port) = if raw.first() == Some(&b'[') {
        // An IPv6 literal: `[::1]` or `[::1]:8080`.
        let end = raw.iter().position(|&b| b == b']').ok_or(())?;
        let inside = &raw[1..end];
        if inside.is_empty()
            || !inside
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(());
        }
        (&raw[..=end], &raw[end + 1..])
    } else {
        match raw.iter().position(|&b| b == b':') {
            Some(i) => (&raw[..i], &raw[i..]),
            None => (raw, &raw[raw.len()..]),
        }
    };
    if !port.is_empty() && (port[0] != b':' || !port[1..].iter().all(u8::is_ascii_digit)) {
        return Err(());
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() && !port.is_empty() {
        return Err(());
    }
    let valid =
        |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':');
    if !name.iter().all(valid) {
        return Err(());
    }
    Ok(Some(String::from_utf8_lossy(name).to_ascii_lowercase()))
}

/// What a request line httparse refused at its version is: a 505 only if
/// the line is well formed, `method SP target SP HTTP/d.d` (RFC 9112 3),
/// and only its version is one this server does not speak. Any other line
/// (a space in the target, garbage before the method, a trailing space)
/// is malformed, a 400. httparse refuses a version as soon as it sees a
/// wrong byte, so the line may not be complete yet: while what has arrived
/// could still become a well-formed line, wait for the rest.
pub(super) fn refused_version(buf: &[u8]) -> Parsed {
    // httparse skips empty lines before a request line (RFC 9112 2.2).
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => (&rest[..end], true),
        None => (rest, false),
    };
    let line = if complete {
        line.strip_suffix(b"\r").unwrap_or(line)
    } else {
        line
    };
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Reject(Status::BadRequest);
    };
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    // Visible ASCII and obs-text, as httparse takes in a target.
    let target_char = |b: &u8| matches!(b, 0x21..=0x7e | 0x80..=0xff);
    let well_formed = !method.is_empty()
        && method.iter().all(tchar)
        && !target.is_empty()
        && target.iter().all(target_char);
    let pattern = b"HTTP/0.0";
    let fits = |len: usize| {
        version.len() == len
            && version.iter().zip(pattern).all(|(&b, &p)| {
                if p == b'0' {
                    b.is_ascii_digit()
                } else {
                    b == p
                }
            })
    };
    if !well_formed {
        Parsed::Reject(Status::BadRequest)
    } else if complete && fits(pattern.len()) {
        Parsed::Reject(Status::VersionNotSupported)
    } else if !complete && (0..=pattern.len()).any(fits) {
        Parsed::Partial
    } else {
        Parsed::Reject(Status::BadRequest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalized() {
        let n = |s: &str| normalize_host(s.as_bytes());
        assert_eq!(n("Example.org."), Ok(Some("example.org".into())));
        assert_eq!(n("[::1]:8080"), Ok(Some("[::1]".into())));
        assert_eq!(n("a:"), Ok(Some("a".into())));
        assert_eq!(n(""), Ok(None));
        assert_eq!(n("a:b"), Err(()));
        assert_eq!(n("[::1"), Err(()));
        assert_eq!(n("user@host"), Err(()));
        assert_eq!(n(":80"), Err(()));
    }

    #[test]
    fn the_host_comes_from_the_target_first_and_is_never_empty_there() {
        let h = |t: Option<&str>, hh: Option<&str>| request_host(t, hh.map(str::as_bytes));
        assert_eq!(
            h(Some("B.example"), Some("a")),
            Ok(Some("b.example".into()))
        );
        assert_eq!(h(None, Some("a:80")), Ok(Some("a".into())));
        assert_eq!(h(None, Some("")), Ok(None));
        assert_eq!(h(None, None), Ok(None));
        assert_eq!(h(Some(""), Some("a")), Err(()));
        assert_eq!(h(Some(" "), None), Err(()));
        assert_eq!(h(Some("u@h"), None), Err(()));
    }

    #[test]
    fn absolute_forms_split() {
        assert_eq!(
            split_absolute_form("HTTP://h/x?y"),
            Some(("h", "/x?y".to_string()))
        );
        assert_eq!(
            split_absolute_form("http://h?q"),
            Some(("h", "/?q".to_string()))
        );
        assert_eq!(split_absolute_form("https://"), Some(("", "/".to_string())));
        assert_eq!(split_absolute_form("/x"), None);
        assert_eq!(split_absolute_form("ftp://h/"), None);
    }

    #[test]
    fn only_a_well_formed_line_is_a_505() {
        let v = |line: &[u8]| refused_version(line);
        let unsupported = Parsed::Reject(Status::VersionNotSupported);
        let bad = Parsed::Reject(Status::BadRequest);
        assert_eq!(v(b"GET / HTTP/2.0\r\n"), unsupported);
        assert_eq!(v(b"\r\nM-SEARCH * HTTP/3.1\n"), unsupported);
        assert_eq!(v(b"GET /a b HTTP/1.1\r\n"), bad);
        assert_eq!(v(b"x GET / HTTP/1.1\r\n"), bad);
        assert_eq!(v(b"GET / HTTP/1.1 \r\n"), bad);
        assert_eq!(v(b"GET  / HTTP/2.0\r\n"), bad);
        assert_eq!(v(b"GET /\x7f HTTP/2.0\r\n"), bad);
        assert_eq!(v(b"G@T / HTTP/2.0\r\n"), bad);
        assert_eq!(v(b"GET / HTTP/2.0\r\r\n"), bad);
        assert_eq!(v(b"GET / HTTP/2.0"), Parsed::Partial);
        assert_eq!(v(b"GET / HTTP/"), Parsed::Partial);
        assert_eq!(v(b"GET / HTTX"), bad);
        assert_eq!(v(b"GET / HTTP/2.0 "), bad);
    }
}
