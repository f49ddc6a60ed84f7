//! [`SubnetId`]: one subnet's id on chain and on the network alike.

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A subnet's id: the `u32` the chain assigned it, and the namespace of its
/// protocols and topics on the network (`/mesh/<id>/…`), so nodes of
/// different subnets never mix.
///
/// ```
/// use mesh_core::SubnetId;
/// let id: SubnetId = "7".parse().unwrap();
/// assert_eq!(id, SubnetId::new(7));
/// assert_eq!(id.protocol("kad/1.0.0"), "/mesh/7/kad/1.0.0");
/// assert!("seven".parse::<SubnetId>().is_err());
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SubnetId(u32);

impl SubnetId {
    /// The subnet with chain id `id`.
    pub const fn new(id: u32) -> Self {
        Self(id)
    }

    /// The chain's number for this subnet.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The name of protocol `name` in this subnet: `/mesh/<id>/<name>`.
    pub fn protocol(self, name: &str) -> String {
        format!("/mesh/{}/{name}", self.0)
    }
}

impl From<u32> for SubnetId {
    fn from(id: u32) -> Self {
        Self(id)
    }
}

impl From<SubnetId> for u32 {
    fn from(id: SubnetId) -> Self {
        id.0
    }
}

impl fmt::Display for SubnetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A subnet id that is not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a subnet id is the chain's number for the subnet (0 to 4294967295), not {input:?}: {source}"
)]
pub struct ParseSubnetIdError {
    input: String,
    source: ParseIntError,
}

impl FromStr for SubnetId {
    type Err = ParseSubnetIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse()
            .map(Self)
            .map_err(|source| ParseSubnetIdError {
                input: s.to_owned(),
                source,
            })
    }
}
