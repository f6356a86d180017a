//! Service discovery: this host's registration in Consul ([`consul`]), and the table of peers
//! cross-host acts and `$target`s go to ([`peers`]), offered to the core as
//! [`crate::remote::Peers`].

pub mod consul;
pub mod peers;

pub use consul::Discovery;
