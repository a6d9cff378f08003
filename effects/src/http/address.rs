//! What kind of address an IP address is: the pure half of the guard.
//!
//! The ranges are those a request from a server must not reach unless someone decided
//! it should: the host itself, the private network, link-local (where cloud metadata
//! services answer), carrier-grade NAT, multicast and broadcast. IPv6 forms that embed an
//! IPv4 address are classified by that address, since that is where they end up.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of address an IP address is, as far as the guard cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AddressClass {
    /// Routable on the internet: allowed unless the handler is in allowlist-only mode.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10.
    Private,
    /// 169.254/16, fe80::/10: where cloud metadata services live.
    LinkLocal,
    /// 0.0.0.0/8, ::: reaches the local host on many systems.
    Unspecified,
    /// 100.64/10, carrier-grade NAT: private to the provider.
    SharedCgnat,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240/4 (reserved for future use).
    Reserved,
}

impl AddressClass {
    /// The class as the end of a sentence: "127.0.0.1 is a loopback address".
    pub(crate) const fn description(self) -> &'static str {
        match self {
            Self::Public => "a public address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address",
            Self::Unspecified => "an unspecified address",
            Self::SharedCgnat => "a shared (carrier-grade NAT) address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "a broadcast address",
            Self::Reserved => "a reserved address",
        }
    }
}

/// Classifies an address; IPv6 forms that embed an IPv4 address (mapped, compatible,
/// NAT64, 6to4) are classified by the IPv4 address, since that is where a gateway or the
/// local stack would deliver them.
pub(crate) fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    match (a, b) {
        (0, _) => AddressClass::Unspecified,
        (127, _) => AddressClass::Loopback,
        (10, _) | (172, 16..=31) | (192, 168) => AddressClass::Private,
        (169, 254) => AddressClass::LinkLocal,
        (100, 64..=127) => AddressClass::SharedCgnat,
        (224..=239, _) => AddressClass::Multicast,
        _ if ip.is_broadcast() => AddressClass::Broadcast,
        (240..=255, _) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    let s = ip.segments();
    let [.., a, b, c, d] = ip.octets();
    let embedded = Ipv4Addr::new(a, b, c, d);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
        [0, 0, 0, 0, 0, 0xffff | 0, _, _] => classify_v4(embedded),
        // 64:ff9b::/96, NAT64: the gateway forwards to the embedded address.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => classify_v4(embedded),
        // 64:ff9b:1::/48, local-use NAT64.
        [0x64, 0xff9b, 1, ..] => AddressClass::Private,
        // 2002:a.b.c.d::/48, 6to4: the relay delivers to the embedded address.
        [0x2002, hi, lo, ..] => {
            let [a, b] = hi.to_be_bytes();
            let [c, d] = lo.to_be_bytes();
            classify_v4(Ipv4Addr::new(a, b, c, d))
        }
        [first, ..] if first & 0xfe00 == 0xfc00 => AddressClass::Private,
        [first, ..] if first & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        [first, ..] if first & 0xffc0 == 0xfec0 => AddressClass::Private,
        [first, ..] if first & 0xff00 == 0xff00 => AddressClass::Multicast,
        _ => AddressClass::Public,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn class(text: &str) -> AddressClass {
        classify(text.parse().unwrap())
    }

    #[test]
    fn the_forbidden_ranges_are_classified() {
        for (ip, expected) in [
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("fc00::1", AddressClass::Private),
            ("fd12:3456::1", AddressClass::Private),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("0.0.0.0", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("100.64.0.1", AddressClass::SharedCgnat),
            ("100.127.255.255", AddressClass::SharedCgnat),
            ("224.0.0.1", AddressClass::Multicast),
            ("ff02::1", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Broadcast),
            ("240.0.0.1", AddressClass::Reserved),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("::10.0.0.1", AddressClass::Private),
            ("64:ff9b::a9fe:a9fe", AddressClass::LinkLocal),
            ("2002:7f00:1::", AddressClass::Loopback),
        ] {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn public_addresses_next_to_the_ranges_are_public() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.0.1",
            "11.0.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::",
        ] {
            assert_eq!(class(ip), AddressClass::Public, "{ip}");
        }
    }

    proptest! {
        #[test]
        fn a_mapped_address_is_classified_as_the_ipv4_address(bits: u32) {
            let v4 = Ipv4Addr::from(bits);
            prop_assert_eq!(classify(IpAddr::V6(v4.to_ipv6_mapped())), classify_v4(v4));
        }

        #[test]
        fn what_std_calls_local_is_never_public_v4(bits: u32) {
            let ip = Ipv4Addr::from(bits);
            let local = ip.is_private() || ip.is_loopback() || ip.is_link_local()
                || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast();
            if local {
                prop_assert_ne!(classify_v4(ip), AddressClass::Public);
            }
        }

        #[test]
        fn what_std_calls_local_is_never_public_v6(bits: u128) {
            let ip = Ipv6Addr::from(bits);
            let local = ip.is_loopback() || ip.is_unspecified() || ip.is_multicast()
                || ip.is_unique_local() || ip.is_unicast_link_local();
            if local {
                prop_assert_ne!(classify_v6(ip), AddressClass::Public);
            }
        }

        #[test]
        fn ten_slash_eight_is_private(low: u32) {
            let ip = Ipv4Addr::from(0x0a00_0000 | (low & 0x00ff_ffff));
            prop_assert_eq!(classify_v4(ip), AddressClass::Private);
        }
    }
}
