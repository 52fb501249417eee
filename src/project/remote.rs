//! Which remote a git import may reach. A learner's URL is parsed, its scheme checked against
//! `projects.git_schemes`, its host resolved once, and every address checked: loopback,
//! private, link-local (cloud metadata), shared, multicast and other reserved ranges are
//! refused unless the host is in `projects.git_allowed_hosts`. The clone is then pinned to the
//! address that was checked (`http.curloptResolve`), so a second DNS answer cannot send git
//! somewhere else, and git follows no redirect.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ProjectError;
use crate::config::ProjectSettings;

/// A remote URL that passed every check, with the address git must use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub url: String,
    /// `host:port:address[,address]` for curl's resolver (http and https): every address that
    /// was checked; `None` for git://, which git resolves itself.
    pub pin: Option<String>,
}

fn refuse(url: &str, reason: &'static str) -> ProjectError {
    ProjectError::GitUrl {
        url: url.chars().take(200).collect(),
        reason,
    }
}

/// Parses `url` and checks its scheme and host name, before any name is resolved.
pub fn parse(
    url: &str,
    settings: &ProjectSettings,
) -> Result<(url::Url, String, u16), ProjectError> {
    let parsed = url::Url::parse(url).map_err(|_| refuse(url, "it is not a valid URL"))?;
    let scheme = parsed.scheme();
    if !settings.git_schemes.iter().any(|s| s == scheme) {
        return Err(refuse(
            url,
            "this server accepts https:// repository URLs only",
        ));
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(name)) => name.trim_end_matches('.').to_ascii_lowercase(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(refuse(url, "it names no host")),
    };
    if !settings.git_allowed_hosts.is_empty() && !is_allowed_host(&host, settings) {
        return Err(refuse(url, "its host is not one this server imports from"));
    }
    let port = parsed
        .port_or_known_default()
        .unwrap_or(if scheme == "git" { 9418 } else { 443 });
    Ok((parsed, host, port))
}

fn is_allowed_host(host: &str, settings: &ProjectSettings) -> bool {
    settings
        .git_allowed_hosts
        .iter()
        .any(|allowed| host == allowed || host.ends_with(&format!(".{allowed}")))
}

/// Resolves the URL's host and checks every address it has; git may use only those.
pub async fn check(url: &str, settings: &ProjectSettings) -> Result<Remote, ProjectError> {
    let (parsed, host, port) = parse(url, settings)?;
    let addresses: Vec<IpAddr> = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        _ => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map(|found| found.map(|a| a.ip()).collect())
            .unwrap_or_else(|error| {
                tracing::info!(%host, %error, "git import: host does not resolve");
                Vec::new()
            }),
    };
    if addresses.is_empty() {
        return Err(refuse(url, "its host name does not resolve"));
    }
    if !is_allowed_host(&host, settings)
        && let Some(internal) = addresses.iter().find(|ip| !is_public(**ip))
    {
        tracing::warn!(%host, address = %internal, "git import refused: internal address");
        return Err(refuse(
            url,
            "it points at a private, loopback or reserved address",
        ));
    }
    let pin = (parsed.scheme() != "git").then(|| {
        let address = addresses
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            })
            .collect::<Vec<_>>()
            .join(",");
        let name = match parsed.host() {
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            _ => host.clone(),
        };
        format!("{name}:{port}:{address}")
    });
    Ok(Remote {
        url: parsed.to_string(),
        pin,
    })
}

/// Whether `ip` is an ordinary public unicast address: not loopback, private, link-local,
/// shared (CGNAT), multicast, documentation, benchmarking or otherwise reserved; IPv4 inside
/// IPv6 (mapped, compatible, NAT64) is judged as the IPv4 address it carries.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let reserved = a == 0                              // "this network"
        || a == 10                                     // private
        || a == 127                                    // loopback
        || (a == 100 && (64..128).contains(&b))        // shared address space (CGNAT)
        || (a == 169 && b == 254)                      // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))         // private
        || (a == 192 && b == 0 && c == 0)              // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)              // documentation
        || (a == 192 && b == 168)                      // private
        || (a == 198 && (b == 18 || b == 19))          // benchmarking
        || (a == 198 && b == 51 && c == 100)           // documentation
        || (a == 203 && b == 0 && c == 113)            // documentation
        || a >= 224; // multicast, reserved, broadcast
    !reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96) carry an IPv4 address.
    if s[..6] == [0, 0, 0, 0, 0, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    let reserved = (s[0] & 0xfe00) == 0xfc00       // unique local
        || (s[0] & 0xffc0) == 0xfe80               // link-local
        || (s[0] & 0xff00) == 0xff00               // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8)      // documentation
        || (s[0] == 0x2001 && s[1] < 0x0200)       // IETF special purpose (Teredo, ORCHID, ...)
        || s[0] == 0x2002                          // 6to4 carries any IPv4 address
        || s[0] == 0x0100 && s[1..4] == [0, 0, 0]; // discard-only
    !reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(schemes: &[&str], hosts: &[&str]) -> ProjectSettings {
        let mut settings =
            crate::config::Settings::defaults(std::path::Path::new("/nonexistent")).projects;
        settings.git_schemes = schemes.iter().map(|s| s.to_string()).collect();
        settings.git_allowed_hosts = hosts.iter().map(|s| s.to_string()).collect();
        settings
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for internal in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = internal.parse().unwrap();
            assert!(!is_public(ip), "{internal} must not count as public");
        }
        for public in ["1.1.1.1", "140.82.112.3", "172.32.0.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public} is public");
        }
    }

    #[test]
    fn only_the_configured_schemes_and_hosts_pass() {
        let https_only = settings(&["https"], &[]);
        assert!(parse("https://example.org/a.git", &https_only).is_ok());
        for refused in [
            "http://example.org/a.git",
            "git://example.org/a.git",
            "ssh://git@example.org/a.git",
            "ext::sh -c x",
            "https://",
        ] {
            assert!(parse(refused, &https_only).is_err(), "{refused}");
        }
        let listed = settings(&["https"], &["gitlab.school.org"]);
        assert!(parse("https://gitlab.school.org/a.git", &listed).is_ok());
        assert!(parse("https://git.gitlab.school.org/a.git", &listed).is_ok());
        assert!(parse("https://github.com/a.git", &listed).is_err());
        assert!(parse("https://evilgitlab.school.org/a.git", &listed).is_err());
    }

    #[tokio::test]
    async fn loopback_and_metadata_urls_are_refused_before_any_connection() {
        let settings = settings(&["https", "http", "git"], &[]);
        for url in [
            "https://127.0.0.1:9/x.git",
            "http://localhost:9/x.git",
            "http://169.254.169.254/latest/meta-data/",
            "https://[::1]/x.git",
            "https://[::ffff:10.0.0.1]/x.git",
            "git://127.0.0.1/x.git",
            "http://2130706433/x.git",
        ] {
            let error = check(url, &settings).await.expect_err(url);
            assert!(
                error.to_string().contains("private, loopback or reserved"),
                "{url}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn a_checked_address_is_pinned_for_git() {
        let settings = settings(&["https", "http", "git"], &["localhost"]);
        let remote = check("http://localhost:8123/x.git", &settings)
            .await
            .unwrap();
        let pin = remote.pin.expect("http is pinned");
        assert!(pin.starts_with("localhost:8123:"), "{pin}");
        assert!(pin.contains("127.0.0.1"), "{pin}");
        let git = check("git://localhost/x.git", &settings).await.unwrap();
        assert_eq!(git.pin, None);
    }
}
