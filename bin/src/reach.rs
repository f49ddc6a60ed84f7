//! The reachability flags `mesh-dht` and `mesh-server` share: for nodes
//! behind NAT (AutoNAT, relays, hole punching) and for announcing a public
//! address.

use std::net::IpAddr;

use anyhow::{bail, Result};
use mesh_dht::{DhtConfig, Multiaddr, ReachConfig, RelayLimits};

/// Flags for nodes behind NAT and for public addresses.
#[derive(Debug, Clone, clap::Args)]
pub struct ReachArgs {
    /// This node's public IP, when it is reachable there (port forwarding, a
    /// 1:1 NAT): announced as /ip4/<IP>/tcp/<PORT> and
    /// /ip4/<IP>/udp/<PORT>/quic-v1 beside --announce_maddrs.
    #[arg(long = "public_ip", alias = "public-ip", value_name = "IP")]
    pub public_ip: Option<IpAddr>,
    /// The public port with --public_ip (default: the port of the first
    /// --host_maddrs).
    #[arg(long = "port", value_name = "PORT", requires = "public_ip")]
    pub port: Option<u16>,
    /// When AutoNAT finds this node not reachable, take a slot on relays
    /// among the initial peers and announce the relayed address; relayed
    /// connections are upgraded to direct ones by hole punching.
    #[arg(long = "use_relay", alias = "use-relay", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub use_relay: bool,
    /// Also look for relays among the peers of the routing table.
    #[arg(long = "use_auto_relay", alias = "use-auto-relay", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub use_auto_relay: bool,
    /// Do not probe whether others can dial this node (nor answer their probes).
    #[arg(long = "no_autonat", alias = "no-autonat")]
    pub no_autonat: bool,
    /// Keep private-range addresses (10.x, 192.168.x, …) peers report even
    /// when they are reached over a public address: for a subnet on one LAN.
    #[arg(long = "allow_private_addrs", alias = "allow-private-addrs")]
    pub allow_private_addrs: bool,
    /// Ask the router (UPnP IGD) to forward the listening ports to this
    /// node and announce the public address it maps. Off by default.
    #[arg(long = "upnp")]
    pub upnp: bool,
}

impl ReachArgs {
    /// Sets `config.reach` and adds the --public_ip addresses to
    /// `config.announce`; `relay_server` says whether this node relays.
    pub fn apply(&self, config: &mut DhtConfig, relay_server: bool) -> Result<()> {
        config.reach = ReachConfig {
            relay_server: relay_server.then(RelayLimits::default),
            autonat: !self.no_autonat,
            use_relay: self.use_relay,
            use_auto_relay: self.use_auto_relay,
            allow_private_addrs: self.allow_private_addrs,
            upnp: self.upnp,
            ..ReachConfig::default()
        };
        if let Some(ip) = self.public_ip {
            let port = match self.port {
                Some(p) => p,
                None => match config.listen.first().and_then(port_of) {
                    Some(p) if p != 0 => p,
                    _ => {
                        bail!("--public_ip needs --port: the first --host_maddrs has no fixed port")
                    }
                },
            };
            config.announce.extend(public_addrs(ip, port));
        }
        Ok(())
    }
}

fn port_of(addr: &Multiaddr) -> Option<u16> {
    let text = addr.to_string();
    let mut parts = text.split('/');
    while let Some(p) = parts.next() {
        if p == "tcp" || p == "udp" {
            return parts.next()?.parse().ok();
        }
    }
    None
}

/// The TCP and QUIC addresses of `ip:port`.
pub fn public_addrs(ip: IpAddr, port: u16) -> Vec<Multiaddr> {
    let ip = match ip {
        IpAddr::V4(v4) => format!("/ip4/{v4}"),
        IpAddr::V6(v6) => format!("/ip6/{v6}"),
    };
    [
        format!("{ip}/tcp/{port}"),
        format!("{ip}/udp/{port}/quic-v1"),
    ]
    .iter()
    .map(|a| a.parse().expect("a well-formed multiaddr"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ip_and_port_become_announced_addresses() {
        let addrs = public_addrs("198.51.100.7".parse().unwrap(), 4444);
        assert_eq!(addrs[0].to_string(), "/ip4/198.51.100.7/tcp/4444");
        assert_eq!(addrs[1].to_string(), "/ip4/198.51.100.7/udp/4444/quic-v1");
        let listen: Multiaddr = "/ip4/0.0.0.0/tcp/31330".parse().unwrap();
        assert_eq!(port_of(&listen), Some(31330));
    }
}
