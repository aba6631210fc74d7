//! Where alerts may go, and what of a webhook URL may be shown.
//!
//! Event rules make the server itself send webhooks and syslog datagrams,
//! to addresses an admin with `rules:create` chose. Unchecked, that admin
//! could reach what only the server can: a cloud metadata service
//! (169.254.169.254), services on loopback, the internal network. So, unless
//! the operator allows it ([`AlertReach`], from the server configuration),
//! alerts go to public unicast addresses only: [`refusal`] names what is
//! refused (loopback, unspecified, private, shared (CGNAT), link-local,
//! unique local, site-local, multicast, broadcast and reserved, benchmarking,
//! documentation and protocol ranges, and every IPv6 form that carries an
//! IPv4 address, judged by that address).
//!
//! The check is made when the connection is made, on the addresses a name
//! resolves to then (a name checked when the rule is saved may resolve
//! elsewhere later):
//!
//! * webhooks: [`PublicResolver`] is the HTTP client's resolver and drops
//!   refused addresses; the client does not resolve an IP literal, so
//!   [`check_literal`] checks the URL's host before sending. Proxies from
//!   the environment are not used (a proxy would resolve and connect
//!   beyond the check) and redirects are not followed (see `notify`).
//! * syslog over UDP: [`resolve_allowed`] resolves, filters, and the
//!   datagram goes to the first address left.
//! * syslog without an address (the server's own `/dev/log`): only with
//!   `alerts_local_syslog`.
//!
//! A refusal is an [`Refused`] error: the alert is not sent, and the
//! delivery logs it at `warn` and counts it. Saving a rule refuses early
//! what is refused whatever it resolves to ([`check_actions`]: literal
//! addresses, local syslog), so the admin hears of it at once.
//!
//! Webhook URLs often carry secrets (Slack, Teams and similar services put
//! a token in the path or the query): logs name a receiver by
//! [`origin`] (`scheme://host:port`), and admins who may not update rules
//! see [`redacted`] URLs.
use crate::config::ServerConfig;
use crate::errors::{ApiError, ApiResult};
use palisade_api::admin::{EventAction, RuleBody};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the operator allows alerts to reach beyond public addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AlertReach {
    /// Any address (`alerts_allow_private_addresses`).
    pub(crate) private_addresses: bool,
    /// The server host's `/dev/log` (`alerts_local_syslog`).
    pub(crate) local_syslog: bool,
}

impl AlertReach {
    pub(crate) fn of(config: &ServerConfig) -> AlertReach {
        AlertReach {
            private_addresses: config.alerts_allow_private_addresses,
            local_syslog: config.alerts_local_syslog,
        }
    }
}

/// An alert target the configuration does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// The host (or address) as named, never a URL.
    what: String,
    why: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

impl std::error::Error for Refused {}

impl Refused {
    fn address(what: impl Into<String>, why: &str) -> Refused {
        Refused {
            what: what.into(),
            why: format!(
                "{why}; alerts go to public addresses only (server setting \
                 alerts_allow_private_addresses)"
            ),
        }
    }

    pub(crate) fn local_syslog() -> Refused {
        Refused {
            what: "/dev/log".to_owned(),
            why: "this server does not write alerts to its own syslog (server setting \
                  alerts_local_syslog)"
                .to_owned(),
        }
    }
}

/// IPv4 ranges refused: (network, prefix length, what it is).
const V4: &[(u32, u8, &str)] = &[
    (0x0000_0000, 8, "a \"this network\" address"), // includes 0.0.0.0
    (0x0a00_0000, 8, "a private address"),
    (0x6440_0000, 10, "a shared (CGNAT) address"),
    (0x7f00_0000, 8, "a loopback address"),
    (0xa9fe_0000, 16, "a link-local address"),
    (0xac10_0000, 12, "a private address"),
    (0xc000_0000, 24, "an IETF protocol address"),
    (0xc000_0200, 24, "a documentation address"),
    (0xc058_6300, 24, "a 6to4 relay address"),
    (0xc0a8_0000, 16, "a private address"),
    (0xc612_0000, 15, "a benchmarking address"),
    (0xc633_6400, 24, "a documentation address"),
    (0xcb00_7100, 24, "a documentation address"),
    (0xe000_0000, 4, "a multicast address"),
    (0xf000_0000, 4, "a reserved or broadcast address"),
];

/// IPv6 ranges refused (after the forms that carry an IPv4 address).
const V6: &[(u128, u8, &str)] = &[
    (0x0064_ff9b_0001 << 80, 48, "a local-use NAT64 address"),
    (0x0100 << 112, 64, "a discard-only address"),
    (0x2001 << 112, 23, "an IETF protocol address"), // includes Teredo
    (0x2001_0db8 << 96, 32, "a documentation address"),
    (0x3fff << 112, 20, "a documentation address"),
    (0xfc00 << 112, 7, "a unique local address"),
    (0xfe80 << 112, 10, "a link-local address"),
    (0xfec0 << 112, 10, "a site-local address"),
    (0xff00 << 112, 8, "a multicast address"),
];

fn in_v4(bits: u32, net: u32, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    bits & mask == net
}

fn in_v6(bits: u128, net: u128, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    bits & mask == net
}

/// Why alerts may not go to `ip` by default, or `None` for a public
/// unicast address.
pub(crate) fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    V4.iter()
        .find(|(net, len, _)| in_v4(bits, *net, *len))
        .map(|(_, _, why)| *why)
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    match bits {
        0 => return Some("the unspecified address"),
        1 => return Some("a loopback address"),
        _ => {}
    }
    if let Some(v4) = embedded_v4(bits) {
        return refusal_v4(v4);
    }
    V6.iter()
        .find(|(net, len, _)| in_v6(bits, *net, *len))
        .map(|(_, _, why)| *why)
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4
/// (`2002:AABB:CCDD::/48`). Each reaches that IPv4 address one way or
/// another, so it is judged as that address.
fn embedded_v4(bits: u128) -> Option<Ipv4Addr> {
    let low = Ipv4Addr::from(bits as u32);
    match bits >> 32 {
        0 | 0xffff | 0xffff_0000 => return Some(low),
        0x0064_ff9b_0000_0000_0000_0000 => return Some(low),
        _ => {}
    }
    if bits >> 112 == 0x2002 {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

/// Refuse a URL whose host is an IP literal that is not allowed (names
/// are checked by [`PublicResolver`] when they are resolved).
pub(crate) fn check_literal(url: &reqwest::Url) -> Result<(), Refused> {
    // The parser has normalised an IPv4 host (`2130706433`, `0x7f.1`) to
    // dotted decimal and bracketed an IPv6 one.
    let host = url.host_str().unwrap_or_default();
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(());
    };
    match refusal(ip) {
        Some(why) => Err(Refused::address(ip.to_string(), why)),
        None => Ok(()),
    }
}

/// The HTTP client's resolver when private addresses are not allowed: the
/// system's answer without the refused addresses, or an error naming the
/// host when none is left.
#[derive(Debug, Default)]
pub(crate) struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = allowed_only(&host, found)?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                Box::new(allowed.into_iter()) as reqwest::dns::Addrs
            )
        })
    }
}

/// The addresses of `found` that are allowed; an error naming `host` (and
/// why its first address is refused) when none is.
fn allowed_only(host: &str, found: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
    let first_refusal = found.iter().find_map(|a| refusal(a.ip()));
    let allowed: Vec<SocketAddr> = found
        .into_iter()
        .filter(|a| refusal(a.ip()).is_none())
        .collect();
    match (allowed.is_empty(), first_refusal) {
        (true, Some(why)) => Err(Refused::address(
            host,
            &format!("resolves only to addresses alerts may not reach ({why})"),
        )),
        _ => Ok(allowed),
    }
}

/// Why resolving a `host:port` syslog target gave nothing to send to.
#[derive(Debug)]
pub(crate) enum ResolveError {
    Refused(Refused),
    Failed(String),
}

/// The addresses of a `host:port` alerts may be sent to, in the resolver's
/// order; every one when `reach` allows private addresses.
pub(crate) async fn resolve_allowed(
    address: &str,
    reach: AlertReach,
    timeout: std::time::Duration,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let found: Vec<SocketAddr> = tokio::time::timeout(timeout, tokio::net::lookup_host(address))
        .await
        .map_err(|_| ResolveError::Failed("name resolution timed out".to_owned()))?
        .map_err(|e| ResolveError::Failed(e.to_string()))?
        .collect();
    if found.is_empty() {
        return Err(ResolveError::Failed(format!(
            "{address} resolves to no address"
        )));
    }
    if reach.private_addresses {
        return Ok(found);
    }
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    allowed_only(host, found).map_err(ResolveError::Refused)
}

/// What saving a rule refuses whatever names resolve to: webhooks and
/// syslog targets given as IP literals that are not allowed, and syslog
/// without an address when local syslog is not allowed (a 422 naming the
/// action's field). Run after [`crate::rules::validate`], on a valid body.
pub(crate) fn check_actions(body: &RuleBody, reach: AlertReach) -> ApiResult<()> {
    let RuleBody::Event { actions, .. } = body else {
        return Ok(());
    };
    for (i, a) in actions.iter().enumerate() {
        let refused = match a {
            EventAction::Webhook { url } if !reach.private_addresses => reqwest::Url::parse(url)
                .ok()
                .and_then(|u| check_literal(&u).err())
                .map(|r| (format!("body.actions[{i}].url"), r)),
            EventAction::Syslog { address: Some(a) } if !reach.private_addresses => a
                .parse::<SocketAddr>()
                .ok()
                .and_then(|s| refusal(s.ip()).map(|why| Refused::address(s.ip().to_string(), why)))
                .map(|r| (format!("body.actions[{i}].address"), r)),
            EventAction::Syslog { address: None } if !reach.local_syslog => Some((
                format!("body.actions[{i}].address"),
                Refused::local_syslog(),
            )),
            _ => None,
        };
        if let Some((field, r)) = refused {
            return Err(ApiError::invalid(&field, r.to_string()));
        }
    }
    Ok(())
}

/// `scheme://host:port` of a webhook URL: how logs name a receiver (the
/// path and query may hold a secret).
pub(crate) fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or_default()
        ),
        Err(_) => "(unusable URL)".to_owned(),
    }
}

/// A webhook URL as shown to admins who may not update rules: scheme, host
/// and port; the path, query, fragment and credentials (where services put
/// their secret) replaced by `[redacted]`.
pub(crate) fn redacted(url: &str) -> String {
    let Ok(u) = reqwest::Url::parse(url) else {
        return "[redacted]".to_owned();
    };
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    let hidden = u.path() != "/"
        || u.query().is_some()
        || u.fragment().is_some()
        || !u.username().is_empty()
        || u.password().is_some();
    format!(
        "{}://{}{port}/{}",
        u.scheme(),
        u.host_str().unwrap_or_default(),
        if hidden { "[redacted]" } else { "" }
    )
}

/// Redact the webhook URLs of a rule body (see [`redacted`]).
pub(crate) fn redact_body(body: &mut RuleBody) {
    if let RuleBody::Event { actions, .. } = body {
        for a in actions {
            if let EventAction::Webhook { url } = a {
                *url = redacted(url);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(ip: &str, refused: bool) {
        let parsed: IpAddr = ip.parse().expect(ip);
        assert_eq!(
            refusal(parsed).is_some(),
            refused,
            "{ip}: {:?}",
            refusal(parsed)
        );
    }

    #[test]
    fn refused_and_allowed_addresses() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.170",
            "192.0.2.10",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "3fff::1",
            "100::1",
            "64:ff9b:1::1",
            // IPv4 in IPv6 clothing.
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "::ffff:0:192.168.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::",
        ] {
            check(ip, true);
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "169.253.255.255",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.254",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            check(ip, false);
        }
    }

    #[test]
    fn literal_hosts_of_urls() {
        for url in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/x",
            "http://[::ffff:7f00:1]/x",
            "https://169.254.169.254/latest/meta-data/",
            // Numeric forms the URL parser normalises to 127.0.0.1.
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
        ] {
            let u = reqwest::Url::parse(url).expect(url);
            assert!(check_literal(&u).is_err(), "{url}");
        }
        for url in [
            "https://hooks.example.com/x",
            "http://8.8.8.8/",
            "http://localhost/",
        ] {
            let u = reqwest::Url::parse(url).expect(url);
            // Names are the resolver's to check.
            assert!(check_literal(&u).is_ok(), "{url}");
        }
    }

    #[test]
    fn origins_and_redaction() {
        let url = "https://user:pw@hooks.slack.com/services/T0/B0/SECRET?token=x#f";
        assert_eq!(origin(url), "https://hooks.slack.com:443");
        assert_eq!(origin("http://[::1]:9000/x"), "http://[::1]:9000");
        assert_eq!(origin("not a url"), "(unusable URL)");
        assert_eq!(redacted(url), "https://hooks.slack.com/[redacted]");
        assert_eq!(
            redacted("http://hooks.example:8080/a?b"),
            "http://hooks.example:8080/[redacted]"
        );
        assert_eq!(redacted("https://hooks.example/"), "https://hooks.example/");
        assert_eq!(redacted("?"), "[redacted]");
    }

    #[tokio::test]
    async fn syslog_targets_are_resolved_then_filtered() {
        let t = std::time::Duration::from_secs(5);
        let strict = AlertReach::default();
        let open = AlertReach {
            private_addresses: true,
            local_syslog: false,
        };
        match resolve_allowed("127.0.0.1:514", strict, t).await {
            Err(ResolveError::Refused(r)) => {
                assert!(r.to_string().contains("loopback"), "{r}")
            }
            other => panic!("{other:?}"),
        }
        // By name too (when this host resolves localhost at all).
        match resolve_allowed("localhost:514", strict, t).await {
            Err(ResolveError::Refused(_)) => {}
            Err(ResolveError::Failed(e)) => eprintln!("localhost does not resolve here: {e}"),
            Ok(a) => panic!("localhost allowed: {a:?}"),
        }
        let got = resolve_allowed("127.0.0.1:514", open, t)
            .await
            .expect("allowed");
        assert_eq!(got, vec!["127.0.0.1:514".parse().unwrap()]);
    }
}
