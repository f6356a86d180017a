//! `[telemetry]`: where the host's traces go, and how many of them. Pure, but for the standard
//! `OTEL_*` variables it reads.

use std::time::Duration;

use serde::Deserialize;

use crate::telemetry::TelemetrySettings;

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
    /// in `/metrics`), never waited for.
    pub queue_size: usize,
    /// How long one export to the collector may take before its spans are given up, in ms.
    pub export_timeout_ms: u64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            enabled: true,
            endpoint: None,
            service_name: None,
            sample_ratio: None,
            queue_size: 2048,
            export_timeout_ms: 10_000,
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
        if self.queue_size == 0 || self.export_timeout_ms == 0 {
            return Some(
                "telemetry.queue_size and telemetry.export_timeout_ms must be above 0".into(),
            );
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

    /// The export `section` asks for (with the `OTEL_*` variables `env` reads), or `None`
    /// when it is off; `service` names the service when nothing else does.
    pub(super) fn settings(
        section: Option<&Self>,
        service: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<TelemetrySettings> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        let from_env = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_some();
        let section = match section {
            Some(section) if !section.enabled => return None,
            Some(section) => section.clone(),
            None if from_env => Self::default(),
            None => return None,
        };
        let service_name = section
            .service_name
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .or_else(|| env("OTEL_RESOURCE_ATTRIBUTES").and_then(|all| named_in(&all)))
            .or_else(|| service.map(str::to_owned))
            .unwrap_or_else(|| "wasmeca".to_owned());
        Some(TelemetrySettings {
            endpoint: section.endpoint,
            service_name,
            ratio: section.sample_ratio,
            queue_size: section.queue_size,
            export_timeout: Duration::from_millis(section.export_timeout_ms),
            instance: None,
        })
    }
}

/// The `service.name` an `OTEL_RESOURCE_ATTRIBUTES` value (`key=value,key=value`) gives, read
/// as the SDK reads the rest of it (split at commas and the first `=`, trimmed, not decoded),
/// so the spec's order holds: `OTEL_SERVICE_NAME` first, then this, then the host's default.
fn named_in(attributes: &str) -> Option<String> {
    attributes
        .split_terminator(',')
        .filter_map(|entry| entry.split_once('='))
        .find(|(key, _)| key.trim() == "service.name")
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}
