//! Traces: a request's `traceparent` is continued, its spans (the request, parsing,
//! preprocessing, the queue wait, the batch it ran in) reach an OTLP/HTTP receiver this test
//! runs on loopback, and the trace id is in the request's log line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

mod common;

use common::{form, image, Server};

/// An OTLP/HTTP receiver: takes `POST /v1/traces` (protobuf) and keeps the spans.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        stream.read_line(&mut line).await.unwrap();
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.unwrap();
                    assert!(
                        request_line.starts_with("POST /v1/traces "),
                        "{request_line}"
                    );
                    let export = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
                    for rs in export.resource_spans {
                        for ss in rs.scope_spans {
                            sink.lock().unwrap().extend(ss.spans);
                        }
                    }
                    let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
                    stream.get_mut().write_all(ok.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (url, spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

/// A prediction sent as part of the caller's trace (TRACE, span PARENT).
async fn predict_in_trace(s: &Server) -> reqwest::Response {
    let r = reqwest::Client::new()
        .post(s.url("/predict"))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .multipart(form(image("tiny_8x8.png"), "a photo."))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

/// The server's log line for its `/predict` request.
fn predict_log_line(s: &Server) -> serde_json::Value {
    let is_it = |l: &serde_json::Value| l["event"] == "request" && l["route"] == "/predict";
    s.log_lines_once(|lines| lines.iter().any(is_it))
        .into_iter()
        .find(is_it)
        .expect("a request line for /predict")
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spans_reach_the_collector_under_the_callers_trace() {
    let (url, spans) = receiver().await;
    let s = Server::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    let r = predict_in_trace(&s).await;
    let echoed = r.headers()["traceparent"].to_str().unwrap().to_owned();
    assert!(echoed.starts_with(&format!("00-{TRACE}-")), "{echoed}");
    let server_span_id = echoed.split('-').nth(2).unwrap().to_owned();
    assert_ne!(server_span_id, PARENT);

    let deadline = Instant::now() + Duration::from_secs(15);
    let by_name: HashMap<String, Span> = loop {
        let got: HashMap<String, Span> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|sp| hex(&sp.trace_id) == TRACE)
            .map(|sp| (sp.name.clone(), sp.clone()))
            .collect();
        if got.len() >= 5 {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "spans received: {:?}",
            got.keys()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let server = &by_name["POST /predict"];
    assert_eq!(
        hex(&server.parent_span_id),
        PARENT,
        "the caller's span is the parent"
    );
    assert_eq!(hex(&server.span_id), server_span_id);
    assert_eq!(
        attribute(server, "http.response.status_code"),
        Some(AnyValue::IntValue(200))
    );
    for stage in ["parse", "preprocess", "queue", "inference"] {
        let sp = &by_name[stage];
        assert_eq!(hex(&sp.parent_span_id), server_span_id, "{stage}");
        assert!(
            sp.start_time_unix_nano >= server.start_time_unix_nano,
            "{stage}"
        );
        assert!(
            sp.end_time_unix_nano <= server.end_time_unix_nano,
            "{stage}"
        );
        assert!(sp.end_time_unix_nano >= sp.start_time_unix_nano, "{stage}");
    }
    let inference = &by_name["inference"];
    assert_eq!(
        attribute(inference, "ofa.batch.size"),
        Some(AnyValue::IntValue(1))
    );
    assert!(by_name["parse"].end_time_unix_nano <= by_name["preprocess"].start_time_unix_nano);

    // The log line carries the same ids.
    let line = predict_log_line(&s);
    assert_eq!(line["trace_id"], TRACE);
    assert_eq!(line["span_id"], server_span_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_but_the_trace_id_is_logged() {
    let s = Server::start(&[]);
    let r = predict_in_trace(&s).await;
    assert!(
        !r.headers().contains_key("traceparent"),
        "no span of ours to name"
    );
    let line = predict_log_line(&s);
    assert_eq!(line["trace_id"], TRACE);
    assert_eq!(line["span_id"], PARENT);
}
