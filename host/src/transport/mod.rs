//! Seneca's transports: the HTTP transport ([`http`]) and seneca-amqp-transport ([`amqp`]),
//! each a listener that decodes its wire format into messages for the shared ingress step and
//! encodes the answers, and a client that implements [`crate::remote::Remote`].

pub mod amqp;
pub mod http;
