//! Traces. A request's server span continues the W3C `traceparent` it arrived with; its
//! stages are child spans, written after the fact from the engine's timings: reading and
//! parsing the request, preprocessing its images, the wait for the inference thread, and each
//! batch it ran in. Without a tracer nothing is recorded, but an incoming trace id still
//! reaches the log line.

use std::time::{Instant, SystemTime};

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span, SpanContext, SpanKind, Status, TraceContextExt, Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::timings::Timings;

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// One request's trace: its server span (when tracing is on) in a context.
pub struct RequestTrace {
    cx: Context,
    recording: bool,
    /// Wall clock and monotonic clock read together, to place `Instant`s on the timeline.
    wall: SystemTime,
    mono: Instant,
}

pub fn start(
    provider: Option<&SdkTracerProvider>,
    headers: &HeaderMap,
    name: String,
) -> RequestTrace {
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let (wall, mono) = (SystemTime::now(), Instant::now());
    let Some(provider) = provider else {
        return RequestTrace {
            cx: parent,
            recording: false,
            wall,
            mono,
        };
    };
    let span = provider
        .tracer("ofa-entail")
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_start_time(wall)
        .start_with_context(&provider.tracer("ofa-entail"), &parent);
    RequestTrace {
        cx: parent.with_span(span),
        recording: true,
        wall,
        mono,
    }
}

impl RequestTrace {
    fn context(&self) -> SpanContext {
        self.cx.span().span_context().clone()
    }

    /// The trace and span ids for the log line, when there is a trace.
    pub fn ids(&self) -> Option<(String, String)> {
        let c = self.context();
        c.is_valid()
            .then(|| (c.trace_id().to_string(), c.span_id().to_string()))
    }

    /// `traceparent` of the server span, for the response.
    pub fn traceparent(&self) -> Option<String> {
        let c = self.context();
        (self.recording && c.is_valid()).then(|| {
            format!(
                "00-{}-{}-{:02x}",
                c.trace_id(),
                c.span_id(),
                c.trace_flags().to_u8()
            )
        })
    }

    fn at(&self, t: Instant) -> SystemTime {
        match t.checked_duration_since(self.mono) {
            Some(after) => self.wall + after,
            None => self.wall - self.mono.duration_since(t),
        }
    }

    /// Writes the stage spans and ends the server span.
    pub fn finish(
        self,
        provider: Option<&SdkTracerProvider>,
        attributes: Vec<KeyValue>,
        status: u16,
        timings: Option<&Timings>,
    ) {
        let Some(provider) = provider.filter(|_| self.recording) else {
            return;
        };
        let tracer = provider.tracer("ofa-entail");
        let child = |name: &'static str, from: Instant, to: Instant, attrs: Vec<KeyValue>| {
            let mut s = tracer
                .span_builder(name)
                .with_kind(SpanKind::Internal)
                .with_start_time(self.at(from))
                .with_attributes(attrs)
                .start_with_context(&tracer, &self.cx);
            s.end_with_timestamp(self.at(to.max(from)));
        };
        if let Some(t) = timings.and_then(|t| t.stages.as_ref()) {
            child("parse", self.mono, t.admitted, Vec::new());
            child("preprocess", t.admitted, t.preprocessed, Vec::new());
            child("queue", t.preprocessed, t.started, Vec::new());
            for b in &t.batches {
                child(
                    "inference",
                    b.started,
                    b.started + b.duration,
                    vec![
                        KeyValue::new("ofa.batch.id", b.id as i64),
                        KeyValue::new("ofa.batch.size", b.size as i64),
                    ],
                );
            }
        }
        let span = self.cx.span();
        span.set_attributes(attributes);
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(format!("HTTP {status}")));
        }
        span.end_with_timestamp(self.at(Instant::now()));
    }
}
