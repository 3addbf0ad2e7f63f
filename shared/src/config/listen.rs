//! Listen addresses as written: `"127.0.0.1:8080"`, `"[::1]:8080"`, a bare
//! port (`"8080"`, `":8080"`, `"*:8080"`, `8080`), or `"unix:/path"`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use super::model::ListenAddr;
use super::parse::resolve;

const FORMS: &str = "use IP:PORT, [IPv6]:PORT, PORT, unix:/path or stdin";

/// Parses one address string. Relative unix socket paths are joined to
/// `base`. The error is the whole message.
pub(crate) fn parse_addr(text: &str, base: &Path) -> Result<ListenAddr, String> {
    if text == "stdin" {
        return Ok(ListenAddr::Stdin);
    }
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!(
                "address {text:?} has no socket path after \"unix:\""
            ));
        }
        return Ok(ListenAddr::Unix(resolve(base, path)));
    }
    let (ip, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((ip, port)) = rest.split_once("]:") else {
            return Err(format!("address {text:?} is not valid: {FORMS}"));
        };
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("address {text:?}: {ip:?} is not an IPv6 address"))?;
        (IpAddr::V6(ip), port)
    } else if let Some((ip, port)) = text.rsplit_once(':') {
        let ip =
            match ip {
                "" | "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                _ if ip.contains(':') => {
                    return Err(format!(
                        "address {text:?}: an IPv6 address needs brackets, as in \"[::1]:8080\""
                    ));
                }
                _ => IpAddr::V4(ip.parse().map_err(|_| {
                    format!("address {text:?}: {ip:?} is not an IP address ({FORMS})")
                })?),
            };
        (ip, port)
    } else if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), text)
    } else {
        return Err(format!("address {text:?} is not valid: {FORMS}"));
    };
    let port = parse_port(port).map_err(|why| format!("address {text:?}: {why}"))?;
    Ok(ListenAddr::Tcp(SocketAddr::new(ip, port)))
}

/// A port given as a TOML integer.
pub(crate) fn port_addr(port: i64) -> Result<ListenAddr, String> {
    match u16::try_from(port) {
        Ok(p) if p > 0 => Ok(ListenAddr::Tcp(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            p,
        ))),
        _ => Err(format!("port {port} is out of range (1 to 65535)")),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a port number"));
    }
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("port {text} is out of range (1 to 65535)")),
    }
}

/// A unix socket mode: an octal string such as `"0660"` or `"660"`.
pub(crate) fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|&m| m <= 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(s: &str) -> ListenAddr {
        ListenAddr::Tcp(s.parse().unwrap())
    }

    fn ok(text: &str) -> ListenAddr {
        parse_addr(text, Path::new("/etc/baton")).unwrap()
    }

    fn err(text: &str) -> String {
        parse_addr(text, Path::new("/etc/baton")).unwrap_err()
    }

    #[test]
    fn tcp_forms() {
        assert_eq!(ok("127.0.0.1:8080"), tcp("127.0.0.1:8080"));
        assert_eq!(ok("[::1]:8080"), tcp("[::1]:8080"));
        assert_eq!(ok("0.0.0.0:80"), tcp("0.0.0.0:80"));
        assert_eq!(ok("[::]:80"), tcp("[::]:80"));
        assert_eq!(ok("8080"), tcp("0.0.0.0:8080"));
        assert_eq!(ok(":8080"), tcp("0.0.0.0:8080"));
        assert_eq!(ok("*:8080"), tcp("0.0.0.0:8080"));
        assert_eq!(ok("65535"), tcp("0.0.0.0:65535"));
        assert_eq!(port_addr(8080), Ok(tcp("0.0.0.0:8080")));
    }

    #[test]
    fn unix_forms() {
        assert_eq!(
            ok("unix:/run/baton.sock"),
            ListenAddr::Unix("/run/baton.sock".into())
        );
        assert_eq!(
            ok("unix:run/http.sock"),
            ListenAddr::Unix("/etc/baton/run/http.sock".into())
        );
        assert_eq!(
            err("unix:"),
            r#"address "unix:" has no socket path after "unix:""#
        );
    }

    #[test]
    fn bad_addresses() {
        assert_eq!(
            err("127.0.0.1:0"),
            r#"address "127.0.0.1:0": port 0 is out of range (1 to 65535)"#
        );
        assert_eq!(
            err("0"),
            r#"address "0": port 0 is out of range (1 to 65535)"#
        );
        assert_eq!(
            err("70000"),
            r#"address "70000": port 70000 is out of range (1 to 65535)"#
        );
        assert_eq!(
            err("localhost:80"),
            r#"address "localhost:80": "localhost" is not an IP address (use IP:PORT, [IPv6]:PORT, PORT, unix:/path or stdin)"#
        );
        assert_eq!(
            err("::1:80"),
            r#"address "::1:80": an IPv6 address needs brackets, as in "[::1]:8080""#
        );
        assert_eq!(
            err("[::1]"),
            r#"address "[::1]" is not valid: use IP:PORT, [IPv6]:PORT, PORT, unix:/path or stdin"#
        );
        assert_eq!(
            err("[1.2.3.4]:80"),
            r#"address "[1.2.3.4]:80": "1.2.3.4" is not an IPv6 address"#
        );
        assert_eq!(
            err("1.2.3.4:http"),
            r#"address "1.2.3.4:http": "http" is not a port number"#
        );
        assert_eq!(
            err("example.com"),
            r#"address "example.com" is not valid: use IP:PORT, [IPv6]:PORT, PORT, unix:/path or stdin"#
        );
        assert!(err("").contains("is not valid"));
        assert!(port_addr(0).is_err());
        assert!(port_addr(-1).is_err());
        assert!(port_addr(65536).is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0660"), Some(0o660));
        assert_eq!(parse_mode("660"), Some(0o660));
        assert_eq!(parse_mode("0o600"), Some(0o600));
        assert_eq!(parse_mode("0777"), Some(0o777));
        assert_eq!(parse_mode("1777"), None);
        assert_eq!(parse_mode("0680"), None);
        assert_eq!(parse_mode("rw"), None);
        assert_eq!(parse_mode(""), None);
    }
}
