//! Service discovery: registration in Consul and the table of peers cross-host acts go to.

pub mod consul;
