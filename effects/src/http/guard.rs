//! The guard against server-side request forgery.
//!
//! A workflow's URL can come from user input, so the handler must not become a way into
//! the machine's own network. The guard decides twice:
//!
//! 1. On the URL, before anything is sent ([`Guard::check_url`]): only `http` and
//!    `https`; an IP literal must be a public address or be in `allow_hosts`; a host
//!    listed only with some ports may be called on those ports only; in allowlist-only
//!    mode the host must be listed.
//! 2. On the resolved addresses, inside the connection ([`GuardedResolver`]): the client
//!    resolves names through the guard, which drops every forbidden address of a host
//!    that is not listed. The check and the connection use the same addresses, so a
//!    name that resolves to a public address when checked and a private one when
//!    connecting (DNS rebinding) gets nowhere.
//!
//! Allowlist entries match the host as written in the URL: listing `127.0.0.1` allows
//! `http://127.0.0.1:8080/`, not `http://localhost:8080/`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::HeaderValue;
use reqwest::redirect::Policy;

use super::address::{AddressClass, classify};
use crate::Error;

/// The most entries `allow_hosts` may hold: a longer list is a sign that the guard
/// should be off, which is a decision for the network, not for a list.
pub(crate) const ALLOW_HOSTS_MAX: usize = 1024;

/// The most addresses kept from one name resolution.
const RESOLVED_ADDRS_MAX: usize = 16;

/// The host of a URL, as the guard sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostRef<'a> {
    Domain(&'a str),
    Ip(IpAddr),
}

/// Why the guard refused a request. Travels through reqwest's connector as the source
/// of a connect error, which is how the handler tells a refusal from a network failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused: {0}")]
pub(crate) struct Refusal(String);

/// One `allow_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    host: AllowedHost,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowedHost {
    /// Lowercase, IDNA-normalised, as in a parsed URL.
    Domain(String),
    Ip(IpAddr),
}

impl AllowedHost {
    fn matches(&self, host: HostRef<'_>) -> bool {
        match (self, host) {
            (Self::Domain(listed), HostRef::Domain(domain)) => listed == domain,
            (Self::Ip(listed), HostRef::Ip(ip)) => *listed == ip,
            _ => false,
        }
    }
}

/// The parsed allowlist and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Guard {
    allowed: Vec<Allowed>,
    only_allowed_hosts: bool,
}

impl Guard {
    /// Parses the allowlist; an entry that is not a host, an IP address or either with a
    /// port is a configuration error.
    pub(crate) fn new(allow_hosts: &[String], only_allowed_hosts: bool) -> Result<Self, Error> {
        if allow_hosts.len() > ALLOW_HOSTS_MAX {
            return Err(Error::InvalidConfig {
                setting: "allow_hosts",
                reason: format!(
                    "{} entries, over the limit of {ALLOW_HOSTS_MAX}: list the services, or turn the guard off at the network instead",
                    allow_hosts.len()
                ),
            });
        }
        if only_allowed_hosts && allow_hosts.is_empty() {
            return Err(Error::InvalidConfig {
                setting: "only_allowed_hosts",
                reason: "set with an empty allow_hosts, so every request would be refused: list the hosts to call".into(),
            });
        }
        let allowed = allow_hosts
            .iter()
            .map(|entry| {
                parse_entry(entry).ok_or_else(|| Error::InvalidConfig {
                    setting: "allow_hosts",
                    reason: format!(
                        "`{entry}` is not a host: write a host name or IP address, optionally with a port, such as `api.example.com`, `10.0.0.7:8080` or `[::1]:8080`"
                    ),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            allowed,
            only_allowed_hosts,
        })
    }

    /// Checks a URL before anything is sent. Hosts given by name pass here unless the
    /// mode or a port restriction refuses them; their addresses are checked by the
    /// [`GuardedResolver`].
    pub(crate) fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal(format!(
                "scheme `{}` is not http or https",
                url.scheme()
            )));
        }
        let Some(host) = host_of(url) else {
            return Err(Refusal("the url has no host".into()));
        };
        let shown = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default();
        let listed: Vec<&Allowed> = self
            .allowed
            .iter()
            .filter(|entry| entry.host.matches(host))
            .collect();
        if !listed.is_empty() {
            if listed
                .iter()
                .any(|entry| entry.port.is_none() || entry.port == port)
            {
                return Ok(());
            }
            // A host listed with ports is allowed on those ports only: the resolver sees
            // names without ports, so this is the one place the port can be enforced.
            let ports: Vec<String> = listed
                .iter()
                .filter_map(|entry| entry.port.map(|p| p.to_string()))
                .collect();
            let port = port.unwrap_or_default();
            return Err(Refusal(format!(
                "{shown} is in allow_hosts only with port {}, not {port}; add {shown}:{port} to allow_hosts to call it",
                ports.join(", ")
            )));
        }
        if self.only_allowed_hosts {
            return Err(not_listed(shown));
        }
        match host {
            HostRef::Ip(ip) => match classify(ip) {
                AddressClass::Public => Ok(()),
                class => Err(Refusal(format!(
                    "{shown} is {}; add it to allow_hosts to call it",
                    class.description()
                ))),
            },
            HostRef::Domain(_) => Ok(()),
        }
    }

    /// Keeps the resolved addresses of `name` that may be called: all of them for a
    /// listed host, the public ones otherwise; refuses when none remain.
    pub(crate) fn filter_resolved(
        &self,
        name: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refusal> {
        let name = name.to_ascii_lowercase();
        let listed = self
            .allowed
            .iter()
            .any(|entry| entry.host.matches(HostRef::Domain(&name)));
        if !listed && self.only_allowed_hosts {
            return Err(not_listed(&name));
        }
        let mut kept = Vec::new();
        let mut dropped = None;
        for addr in addrs.into_iter().take(RESOLVED_ADDRS_MAX) {
            match classify(addr.ip()) {
                _ if listed => kept.push(addr),
                AddressClass::Public => kept.push(addr),
                class => dropped = dropped.or(Some((addr.ip(), class))),
            }
        }
        match (kept.is_empty(), dropped) {
            (true, Some((ip, class))) => Err(Refusal(format!(
                "{name} resolves only to addresses the guard refuses ({ip} is {}); add {name} to allow_hosts to call it",
                class.description()
            ))),
            (true, None) => Err(Refusal(format!("{name} resolves to no address"))),
            (false, _) => Ok(kept),
        }
    }
}

fn not_listed(host: &str) -> Refusal {
    Refusal(format!(
        "{host} is not in allow_hosts and only_allowed_hosts is set; add it to allow_hosts to call it"
    ))
}

/// The URL's host. The URL parser has normalised it already (`2130706433` is written
/// `127.0.0.1`, IPv6 in brackets), so reading its text form back is exact.
fn host_of(url: &Url) -> Option<HostRef<'_>> {
    let host = url.host_str()?;
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse().ok().map(|ip| HostRef::Ip(IpAddr::V6(ip)));
    }
    Some(match host.parse::<Ipv4Addr>() {
        Ok(ip) => HostRef::Ip(IpAddr::V4(ip)),
        Err(_) => HostRef::Domain(host),
    })
}

/// Parses `host`, `host:port`, an IP address, `ip:port` or `[ipv6]:port`.
fn parse_entry(entry: &str) -> Option<Allowed> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(Allowed {
            host: AllowedHost::Ip(ip),
            port: None,
        });
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(Allowed {
            host: AllowedHost::Ip(addr.ip()),
            port: Some(addr.port()),
        });
    }
    if entry.is_empty()
        || entry.contains(['/', '@', '?', '#', '\\'])
        || entry.contains(char::is_whitespace)
    {
        return None;
    }
    let (name, port) = match entry.rsplit_once(':') {
        Some((name, port)) => (name, Some(port.parse::<u16>().ok()?)),
        None => (entry, None),
    };
    // Parse the name the way a request URL is parsed, so both normalise alike
    // (lowercase, IDNA, `2130706433` read as 127.0.0.1).
    let url = Url::parse(&format!("http://{name}/")).ok()?;
    let host = match host_of(&url)? {
        HostRef::Domain(domain) => AllowedHost::Domain(domain.to_owned()),
        HostRef::Ip(ip) => AllowedHost::Ip(ip),
    };
    Some(Allowed { host, port })
}

/// The client's DNS resolver: `tokio::net::lookup_host`, then [`Guard::filter_resolved`].
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    guard: Arc<Guard>,
}

impl GuardedResolver {
    pub(crate) fn new(guard: Arc<Guard>) -> Self {
        Self { guard }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.guard);
        let name = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the connector puts the URL's port in.
            let resolved = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let kept = guard.filter_resolved(&name, resolved)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// Builds the one client of a handler: the guard as resolver, no redirects, no proxy.
pub(crate) fn client(guard: Arc<Guard>, user_agent: &str) -> Result<reqwest::Client, Error> {
    let user_agent = HeaderValue::from_str(user_agent).map_err(|_| Error::InvalidConfig {
        setting: "user_agent",
        reason: "not a valid header value: use visible ASCII, such as `keel/0.1`".into(),
    })?;
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver::new(guard)))
        // A redirect could lead to an address the guard refuses; see the module docs.
        .redirect(Policy::none())
        // Through a proxy the resolver would check the proxy's address, not the target's:
        // environment proxies (HTTP_PROXY and friends) would switch the guard off.
        .no_proxy()
        .user_agent(user_agent)
        .build()
        .map_err(|err| Error::InvalidConfig {
            setting: "http client",
            reason: format!("the client could not be built ({err}): check the TLS setup"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn guard(hosts: &[&str], only_allowed_hosts: bool) -> Guard {
        let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        Guard::new(&hosts, only_allowed_hosts).unwrap()
    }

    fn check(guard: &Guard, url: &str) -> Result<(), Refusal> {
        guard.check_url(&Url::parse(url).unwrap())
    }

    proptest! {
        #[test]
        fn an_ip_literal_passes_exactly_when_public_or_listed(bits: u32, v6 in any::<u128>(), listed: bool) {
            for ip in [IpAddr::V4(Ipv4Addr::from(bits)), IpAddr::V6(v6.into())] {
                let host = match ip {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                };
                let listed_hosts = if listed { vec![ip.to_string()] } else { Vec::new() };
                let guard = Guard::new(&listed_hosts, false).unwrap();
                let passed = check(&guard, &format!("http://{host}:8080/")).is_ok();
                prop_assert_eq!(passed, listed || classify(ip) == AddressClass::Public, "{}", ip);
            }
        }
    }

    #[test]
    fn ip_literals_are_refused_with_the_reason_and_the_fix() {
        let guard = guard(&[], false);
        let refusal = check(&guard, "http://127.0.0.1:8080/x").unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "refused: 127.0.0.1 is a loopback address; add it to allow_hosts to call it"
        );
        for url in [
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:7f00:1]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0/",
        ] {
            assert!(check(&guard, url).is_err(), "{url}");
        }
        assert_eq!(check(&guard, "https://93.184.216.34/"), Ok(()));
        assert_eq!(check(&guard, "https://example.com/"), Ok(()));
    }

    #[test]
    fn only_http_and_https_pass() {
        let guard = guard(&[], false);
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com/",
        ] {
            assert!(
                check(&guard, url).unwrap_err().0.contains("scheme"),
                "{url}"
            );
        }
    }

    #[test]
    fn listed_hosts_pass_on_their_ports_only() {
        let guard = guard(&["127.0.0.1", "Internal.Example:8080", "[::1]:9000"], false);
        assert_eq!(check(&guard, "http://127.0.0.1:1234/"), Ok(()));
        assert_eq!(check(&guard, "http://internal.example:8080/"), Ok(()));
        assert_eq!(check(&guard, "http://[::1]:9000/"), Ok(()));
        let refusal = check(&guard, "http://internal.example:9090/").unwrap_err();
        assert!(
            refusal.0.contains("only with port 8080, not 9090"),
            "{refusal}"
        );
        assert!(check(&guard, "http://internal.example/").is_err());
        assert!(check(&guard, "http://[::1]:9001/").is_err());
    }

    #[test]
    fn allowlist_only_mode_refuses_unlisted_public_hosts() {
        let guard = guard(&["api.example.com"], true);
        assert_eq!(check(&guard, "https://api.example.com/v1"), Ok(()));
        let refusal = check(&guard, "https://example.org/").unwrap_err();
        assert!(refusal.0.contains("only_allowed_hosts"), "{refusal}");
        assert!(check(&guard, "https://8.8.8.8/").is_err());
        assert!(guard.filter_resolved("example.org", []).is_err());
    }

    #[test]
    fn resolved_addresses_of_unlisted_hosts_are_filtered() {
        let guard = guard(&["db.internal"], false);
        let public: SocketAddr = "8.8.8.8:0".parse().unwrap();
        let private: SocketAddr = "10.0.0.1:0".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(
            guard.filter_resolved("rebind.example", [private, public]),
            Ok(vec![public])
        );
        let refusal = guard.filter_resolved("localhost", [loopback]).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "refused: localhost resolves only to addresses the guard refuses (127.0.0.1 is a loopback address); add localhost to allow_hosts to call it"
        );
        assert_eq!(
            guard.filter_resolved("DB.internal", [private]),
            Ok(vec![private])
        );
    }

    #[test]
    fn bad_entries_are_configuration_errors() {
        for entry in ["", "http://x", "a b", "x:notaport", "user@host", "x:99999"] {
            let result = Guard::new(&[entry.to_owned()], false);
            assert!(
                matches!(
                    result,
                    Err(Error::InvalidConfig {
                        setting: "allow_hosts",
                        ..
                    })
                ),
                "{entry:?}"
            );
        }
        assert!(Guard::new(&[], true).is_err());
    }
}
