//! seneca-amqp-transport over lapin, wire-compatible with Node's `seneca-amqp-transport` 2
//! (SENECA.md §4): the names and envelopes ([`wire`]), the listener, which acknowledges a command
//! only after its reply is published, and the client; plus what both declare on the broker.

mod client;
mod listener;
pub mod wire;

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

pub use client::{AmqpClient, Sent};
pub use listener::run_listener;
pub use wire::{binding_key, queue_name, routing_key};

/// Why the broker could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker refused, or the connection failed.
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    /// The TCP connection and AMQP handshake did not finish in time (a broker that accepts
    /// TCP but never speaks AMQP).
    #[error("no AMQP handshake within {0:?}")]
    Timeout(Duration),
}

/// Connects to the broker at `url` as `role` (named in the RabbitMQ UI with the exchange),
/// giving up after `timeout`. lapin's own recovery is off: the transports reconnect and
/// redeclare themselves.
async fn connect(
    url: &str,
    role: &str,
    exchange: &str,
    timeout: Duration,
) -> Result<Connection, BrokerError> {
    let name = format!("wasmeca {role} {exchange} {}", std::process::id());
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(timeout, Connection::connect(url, properties)).await {
        Ok(connected) => Ok(connected?),
        Err(_) => Err(BrokerError::Timeout(timeout)),
    }
}

/// Declares what both sides need: the topic exchange, the dead-letter exchange and its queue.
async fn declare_common(
    channel: &Channel,
    exchange: &str,
    dlx: &str,
    dlq: Option<&str>,
) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            dlx.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    if let Some(dlq) = dlq {
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(dlq.into(), options, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                dlq.into(),
                dlx.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Queue arguments as Node declares them (they must match, or the broker refuses a queue that
/// Node and wasmeca share).
fn queue_arguments(dlx: &str, ttl_ms: i32) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(dlx)),
    );
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl_ms));
    args
}
