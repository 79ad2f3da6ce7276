//! How the binary reads the values of its flags (and their `SWITCHYARD_*`
//! variables) where clap's stock parsers are stricter than an operator
//! expects.
//!
//! - Listen addresses: `IP:PORT`, `[IPv6]:PORT`, `NAME:PORT` (`localhost:8081`,
//!   resolved at start) and `:PORT` (every interface, `0.0.0.0:PORT`, as Go
//!   and nginx read it). clap's `SocketAddr` parser takes only literal IPs.
//! - Booleans: clap's `BoolishValueParser` (`1/0`, `true/false`, `yes/no`,
//!   `on/off`, any case), so `SWITCHYARD_NO_ACCESS_LOG=1` works; clap's
//!   default for a flag's variable takes only `true`/`false`.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

pub use clap::builder::BoolishValueParser as Boolish;

/// A listen address (see the module doc). A name is resolved now and the
/// first IPv4 address it has is used (else its first address), so
/// `localhost` binds 127.0.0.1 wherever IPv6 is off.
pub fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    const FORMS: &str =
        "write IP:PORT, HOST:PORT or :PORT, e.g. 127.0.0.1:8081, localhost:8081, :8080";
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("no port ({FORMS})"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port 0-65535 ({FORMS})"))?;
    if host.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e} ({FORMS})"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host:?} resolves to no address ({FORMS})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::builder::TypedValueParser;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn literal_addresses_are_taken_as_they_are() {
        assert_eq!(listen_addr("127.0.0.1:8081"), Ok(addr("127.0.0.1:8081")));
        assert_eq!(listen_addr("0.0.0.0:0"), Ok(addr("0.0.0.0:0")));
        assert_eq!(listen_addr("[::1]:8080"), Ok(addr("[::1]:8080")));
    }

    #[test]
    fn a_bare_port_means_every_interface() {
        assert_eq!(listen_addr(":8080"), Ok(addr("0.0.0.0:8080")));
        assert_eq!(listen_addr(":0"), Ok(addr("0.0.0.0:0")));
    }

    #[test]
    fn a_name_is_resolved_preferring_ipv4() {
        assert_eq!(listen_addr("localhost:8081"), Ok(addr("127.0.0.1:8081")));
    }

    #[test]
    fn a_bad_address_says_which_forms_work() {
        for bad in ["8080", ":http", ":65536", "localhost:", "host name:80"] {
            let e = listen_addr(bad).unwrap_err();
            assert!(e.contains("HOST:PORT or :PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn booleans_take_the_usual_spellings_in_any_case() {
        let cmd = clap::Command::new("t");
        let parse = |s: &str| Boolish::new().parse_ref(&cmd, None, std::ffi::OsStr::new(s));
        for yes in ["1", "true", "TRUE", "yes", "Yes", "on"] {
            assert!(parse(yes).unwrap(), "{yes}");
        }
        for no in ["0", "false", "False", "no", "NO", "off"] {
            assert!(!parse(no).unwrap(), "{no}");
        }
        assert!(parse("maybe").is_err());
    }
}
