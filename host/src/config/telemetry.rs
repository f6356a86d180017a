//! `[telemetry]`: where the host's traces go, and how many of them. Pure, but for the standard
//! `OTEL_*` variables it reads.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::telemetry::TelemetrySettings;

/// The largest export queue: the SDK makes its channel whole at start, so a mistyped size
/// would take the memory at once.
const MAX_QUEUE: usize = 1 << 16;

/// Traces exported by OTLP/HTTP. Off unless this section is there or
/// `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` is set; `OTEL_SDK_DISABLED=true` turns it off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// `false` keeps the section written but turns export off (a staging switch).
    pub enabled: bool,
    /// The collector's base URL (`http://otel-collector:4318`); default
    /// `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`, else `http://localhost:4318`.
    pub endpoint: Option<String>,
    /// `service.name` on every span; default `OTEL_SERVICE_NAME`, else the `service.name` of
    /// `OTEL_RESOURCE_ATTRIBUTES`, else `[consul] service`, else `wasmeca`.
    pub service_name: Option<String>,
    /// The share of new traces kept (0 to 1); a trace that came with a message keeps its
    /// caller's decision. Default `OTEL_TRACES_SAMPLER(_ARG)`, else every trace.
    pub sample_ratio: Option<f64>,
    /// Finished spans waiting for export at most: beyond it spans are dropped (and counted
    /// in `/metrics`), never waited for. Default `OTEL_BSP_MAX_QUEUE_SIZE`, else 2048.
    pub queue_size: Option<usize>,
    /// How long one export to the collector may take before its spans are given up, in ms.
    /// Default `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT`, else 10,000.
    pub export_timeout_ms: Option<u64>,
    /// A PEM file of the CAs an `https` collector's certificate is checked against, beside
    /// the system's (a collector behind a company's own CA). Default
    /// `OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE`.
    pub certificate: Option<PathBuf>,
    /// The PEM certificate this host shows a collector that asks for one (mutual TLS), with
    /// `client_key`. Default `OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_CERTIFICATE`.
    pub client_certificate: Option<PathBuf>,
    /// The PEM private key of `client_certificate`. Default
    /// `OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_KEY`.
    pub client_key: Option<PathBuf>,
    /// `gzip` makes each export several times smaller (a hosted backend's egress), for a little
    /// CPU on the export's thread; `none` sends it as it is. Default
    /// `OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION`, else `none`.
    pub compression: Option<String>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            enabled: true,
            endpoint: None,
            service_name: None,
            sample_ratio: None,
            queue_size: None,
            export_timeout_ms: None,
            certificate: None,
            client_certificate: None,
            client_key: None,
            compression: None,
        }
    }
}

impl Telemetry {
    /// What is wrong with the section, if anything.
    pub(super) fn problem(&self) -> Option<String> {
        if let Some(ratio) = self.sample_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            return Some(format!(
                "telemetry.sample_ratio {ratio} must be between 0 and 1"
            ));
        }
        if self.queue_size == Some(0) || self.export_timeout_ms == Some(0) {
            return Some(
                "telemetry.queue_size and telemetry.export_timeout_ms must be above 0".into(),
            );
        }
        if self.queue_size.is_some_and(|size| size > MAX_QUEUE) {
            return Some(format!(
                "telemetry.queue_size must be at most {MAX_QUEUE} (the queue is made at start)"
            ));
        }
        match &self.endpoint {
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                Some(format!(
                    "telemetry.endpoint `{}` is not an http(s) URL (http://collector:4318)",
                    crate::error::clip(url)
                ))
            }
            _ => None,
        }
    }

    /// The export `section` asks for (with the `OTEL_*` variables `env` reads, each beneath
    /// the key of the section that says the same), or `None` when it is off; `service` names
    /// the service when nothing else does. Fails on a value that is not a number where one is
    /// meant, on a compression other than gzip or none, and on a client certificate without
    /// its key or the reverse.
    pub(super) fn settings(
        section: Option<&Self>,
        service: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TelemetrySettings>, String> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        // The trace-specific variable first, then the one for every signal, as the SDK does.
        let either = |name: &str| {
            let traces = name.replacen("OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_TRACES_", 1);
            env(&traces)
                .map(|value| (traces, value))
                .or_else(|| env(name).map(|value| (name.to_owned(), value)))
        };
        let from_env = either("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let section = match section {
            Some(section) if !section.enabled => return Ok(None),
            Some(section) => section.clone(),
            None if from_env => Self::default(),
            None => return Ok(None),
        };
        let number = |variable: Option<(String, String)>| {
            variable
                .map(|(name, value)| match value.trim().parse::<u64>() {
                    Ok(number) if number > 0 => Ok(number),
                    _ => Err(format!(
                        "{name}={} is not a whole number above 0",
                        crate::error::clip(&value)
                    )),
                })
                .transpose()
        };
        let service_name = section
            .service_name
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .or_else(|| env("OTEL_RESOURCE_ATTRIBUTES").and_then(|all| named_in(&all)))
            .or_else(|| service.map(str::to_owned))
            .unwrap_or_else(|| "wasmeca".to_owned());
        let mut settings = TelemetrySettings::new(service_name);
        settings.endpoint = section.endpoint;
        settings.ratio = section.sample_ratio;
        // A variable is read (and refused if it is no number) only when the section leaves
        // its setting to it.
        if let Some(size) = section.queue_size {
            settings.queue_size = size;
        } else {
            let queue =
                env("OTEL_BSP_MAX_QUEUE_SIZE").map(|v| ("OTEL_BSP_MAX_QUEUE_SIZE".into(), v));
            match number(queue)? {
                Some(size) if size <= MAX_QUEUE as u64 => settings.queue_size = size as usize,
                Some(size) => {
                    return Err(format!(
                        "OTEL_BSP_MAX_QUEUE_SIZE={size} must be at most {MAX_QUEUE} \
                         (the queue is made at start)"
                    ));
                }
                None => {}
            }
        }
        let timeout = match section.export_timeout_ms {
            Some(ms) => Some(ms),
            None => number(either("OTEL_EXPORTER_OTLP_TIMEOUT"))?,
        };
        if let Some(ms) = timeout {
            settings.export_timeout = Duration::from_millis(ms);
        }
        settings.gzip = match section.compression {
            Some(compression) => gzip(&compression, "telemetry.compression")?,
            None => match either("OTEL_EXPORTER_OTLP_COMPRESSION") {
                Some((name, value)) => gzip(&value, &name)?,
                None => false,
            },
        };
        let path = |key: &Option<PathBuf>, variable: &str| {
            key.clone()
                .or_else(|| either(variable).map(|(_, value)| PathBuf::from(value)))
        };
        settings.certificate = path(&section.certificate, "OTEL_EXPORTER_OTLP_CERTIFICATE");
        settings.identity = match (
            path(
                &section.client_certificate,
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            ),
            path(&section.client_key, "OTEL_EXPORTER_OTLP_CLIENT_KEY"),
        ) {
            (Some(certificate), Some(key)) => Some((certificate, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err("telemetry.client_certificate (or \
                     OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_CERTIFICATE) is set without its key: set \
                     telemetry.client_key or OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_KEY too"
                    .to_owned());
            }
            (None, Some(_)) => {
                return Err(
                    "telemetry.client_key (or OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_KEY) \
                     is set without its certificate: set telemetry.client_certificate or \
                     OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_CERTIFICATE too"
                        .to_owned(),
                );
            }
        };
        Ok(Some(settings))
    }
}

/// Whether `compression`, as `setting` gives it, asks for gzip; a value the exporter does not
/// have is refused (the SDK would ignore it and send the exports as they are).
fn gzip(compression: &str, setting: &str) -> Result<bool, String> {
    match compression.trim().to_ascii_lowercase().as_str() {
        "gzip" => Ok(true),
        "none" => Ok(false),
        _ => Err(format!(
            "{setting} `{}` is not gzip or none",
            crate::error::clip(compression)
        )),
    }
}

/// The `service.name` an `OTEL_RESOURCE_ATTRIBUTES` value (`key=value,key=value`) gives, read
/// as the SDK reads the rest of it (split at commas and the first `=`, trimmed, not decoded,
/// the last of a key repeated),
/// so the spec's order holds: `OTEL_SERVICE_NAME` first, then this, then the host's default.
fn named_in(attributes: &str) -> Option<String> {
    attributes
        .split_terminator(',')
        .filter_map(|entry| entry.split_once('='))
        .rfind(|(key, _)| key.trim() == "service.name")
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}
