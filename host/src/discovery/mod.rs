//! Service discovery: Consul's agents and the watches of peer services ([`consul`]), this host's
//! registration ([`register`]), and the table of peers cross-host acts and `$target`s go to
//! ([`peers`]), offered to the core as [`crate::remote::Peers`].

pub mod consul;
pub mod peers;
pub mod register;

pub use consul::Discovery;
