//! The service as `serve` builds it, on the tiny model, and requests as the accept loop hands
//! them to the router.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use ofa_access::{ForwardedHeader, KeyStore, Limits, Policy, TrustedProxies};
use ofa_engine::{Drain, Engine, EngineConfig, EngineMetrics};
use ofa_model::{Device, Entailment};
use ofa_server::access::AccessConfig;
use ofa_server::conn::ConnLimits;
use ofa_server::{router, AppState, ServerConfig};
use serde_json::{json, Value};
use tower::ServiceExt;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

pub fn image(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("golden/images").join(name)).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What the tests vary; the rest is `serve`'s defaults.
pub struct Options {
    pub payload_limit: usize,
    pub max_image_pixels: u64,
    pub max_text_chars: usize,
    pub max_rerank_candidates: usize,
    pub max_rerank_documents: usize,
    /// `IMAGE_CACHE_MB` in bytes (0: off).
    pub image_cache_bytes: u64,
    /// `REQUEST_TIMEOUT`.
    pub request_timeout: Duration,
    /// `MAX_CONCURRENCY`.
    pub max_concurrency: Option<usize>,
    /// Batching, queue and breaker; its pixel and text bounds are the two above.
    pub engine: EngineConfig,
    /// The URL fetcher (`serve` always has one: public addresses only unless
    /// `IMAGE_URL_ALLOW` says otherwise).
    pub image_urls: Option<ofa_fetch::UrlFetcher>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            payload_limit: 2 << 20,
            max_image_pixels: 310_000,
            max_text_chars: 100,
            max_rerank_candidates: 64,
            max_rerank_documents: 1000,
            image_cache_bytes: 0,
            request_timeout: Duration::from_secs(30),
            max_concurrency: None,
            engine: EngineConfig::default(),
            image_urls: Some(url_fetcher("")),
        }
    }
}

/// A fetcher as `serve` builds it, with this `IMAGE_URL_ALLOW`.
pub fn url_fetcher(allow: &str) -> ofa_fetch::UrlFetcher {
    ofa_fetch::UrlFetcher::new(ofa_fetch::UrlSettings {
        allow: ofa_fetch::AllowList::parse(allow).unwrap(),
        max_bytes: 10 << 20,
        timeout: Duration::from_secs(5),
        max_redirects: 5,
    })
    .unwrap()
}

/// Open access: no keys, no limits, nobody trusted (what `serve` does with no flags).
pub fn open_access() -> AccessConfig {
    AccessConfig {
        keys: Arc::new(KeyStore::open(None, &[]).unwrap()),
        defaults: Policy::default(),
        consumer_header: None,
        trusted_proxies: TrustedProxies::parse("").unwrap(),
        forwarded_header: ForwardedHeader::parse("x-forwarded-for").unwrap(),
        auth_failures: None,
        cache_per_consumer: true,
        gateway_secret: None,
        limits: Arc::new(Limits::in_memory(1000)),
        key_poll: Duration::from_secs(3600),
    }
}

/// The service with these limits and open access.
pub fn service(payload_limit: usize, max_image_pixels: u64, max_text_chars: usize) -> AppState {
    build(
        Options {
            payload_limit,
            max_image_pixels,
            max_text_chars,
            ..Options::default()
        },
        open_access(),
    )
}

/// The service with default limits and its access control set by `access`.
pub fn service_with(access: impl FnOnce(&mut AccessConfig)) -> AppState {
    let mut config = open_access();
    access(&mut config);
    build(Options::default(), config)
}

pub fn build(options: Options, access: AccessConfig) -> AppState {
    log();
    let config = ServerConfig {
        request_timeout: options.request_timeout,
        payload_limit: options.payload_limit,
        upload_memory: 256 << 20,
        max_text_chars: options.max_text_chars,
        max_batch_items: 32,
        max_rerank_candidates: options.max_rerank_candidates,
        max_rerank_documents: options.max_rerank_documents,
        image_urls: options.image_urls.clone(),
        max_concurrency: options.max_concurrency,
        access,
        drain_delay: Duration::ZERO,
        shutdown_timeout: Duration::from_secs(5),
        connections: ConnLimits {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        },
        model_id: "tiny".into(),
        model_revision: "test".into(),
        tracing: None,
        fault_route: false,
    };
    let metrics = Arc::new(EngineMetrics::default());
    let drain = Arc::new(Drain::default());
    let state = AppState::new(config, metrics.clone(), drain.clone());
    let model = Entailment::load(fixtures().join("tiny_ofa_ve"), &Device::Cpu)
        .unwrap()
        .with_image_cache(options.image_cache_bytes)
        .with_feature_reuse(true);
    let answers = model.answers().to_vec();
    let engine = Engine::start(
        Arc::new(model),
        EngineConfig {
            max_image_pixels: options.max_image_pixels,
            max_text_chars: options.max_text_chars,
            ..options.engine
        },
        metrics,
        drain,
    );
    let engine = Arc::new(engine);
    engine
        .warmup(
            &ofa_engine::Pair {
                image: image("tiny_8x8.png").into(),
                text: "a photo.".into(),
                premise: None,
                cache_scope: 0,
            },
            &[1],
        )
        .unwrap();
    state.set_engine(engine, json!({"answers": answers}));
    state
}

/// A request from a client on loopback, as the accept loop hands it to the router.
pub fn request(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    if !body.is_empty() {
        // As clients send a body they hold whole; the upload budget reserves by it.
        b = b.header("content-length", body.len());
    }
    let mut req = b.body(Body::from(body)).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    req
}

pub fn json_request(path: &str, v: &Value) -> Request<Body> {
    request(
        "POST",
        path,
        Some("application/json"),
        v.to_string().into_bytes(),
    )
}

/// A multipart form of named parts to `/predict`, as browsers and curl send it.
pub fn multipart(parts: &[(&str, &[u8])]) -> Request<Body> {
    multipart_to("/predict", parts)
}

pub fn multipart_to(path: &str, parts: &[(&str, &[u8])]) -> Request<Body> {
    let boundary = "ofa-test-boundary";
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let file = if *name == "image" {
            "; filename=\"x.jpg\""
        } else {
            ""
        };
        body.extend_from_slice(
            format!("content-disposition: form-data; name=\"{name}\"{file}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    request(
        "POST",
        path,
        Some(&format!("multipart/form-data; boundary={boundary}")),
        body,
    )
}

/// `req` with these headers added (a header named twice is two lines).
pub fn with_headers(mut req: Request<Body>, headers: &[(&str, &str)]) -> Request<Body> {
    for (name, value) in headers {
        req.headers_mut().append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    req
}

/// The whole response.
pub async fn send(state: &AppState, req: Request<Body>) -> Response<Body> {
    router(state.clone()).oneshot(req).await.unwrap()
}

pub async fn call(state: &AppState, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = send(state, req).await;
    let status = resp.status();
    (status, body_bytes(resp).await)
}

pub async fn body_bytes(resp: Response<Body>) -> Vec<u8> {
    resp.into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

pub async fn call_json(state: &AppState, req: Request<Body>) -> (StatusCode, Value) {
    let (status, body) = call(state, req).await;
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
    (status, v)
}

/// `/metrics` as scraped now.
pub async fn metrics(state: &AppState) -> String {
    let (_, body) = call(state, request("GET", "/metrics", None, vec![])).await;
    String::from_utf8(body).unwrap()
}

/// A sample's value on `/metrics`; a series not recorded reads 0 only if its family is there.
pub async fn metric(state: &AppState, series: &str) -> f64 {
    let text = metrics(state).await;
    if let Some(line) = text
        .lines()
        .find(|l| l.strip_prefix(series).is_some_and(|r| r.starts_with(' ')))
    {
        return line.rsplit(' ').next().unwrap().parse().unwrap();
    }
    let family = series.split('{').next().unwrap();
    assert!(
        text.contains(&format!("# TYPE {family} ")),
        "{series} is not exported:\n{text}"
    );
    0.0
}

pub fn png(w: u32, h: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::GrayImage::new(w, h)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// A writer the log tests read back.
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every event of this test binary, as JSON lines: one global subscriber (per-thread ones
/// miss events when tests run in parallel, as tracing caches each call site's interest).
/// Tests find their own `request` lines by the request ids they sent.
pub fn log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let captured = Captured::default();
        let lines = ofa_api::logging::Lines::new(
            ofa_api::logging::LogFormat::Json,
            Box::new(captured.clone()),
            None,
        );
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(lines))
            .expect("the only subscriber of the test binary");
        captured
    })
}

impl Captured {
    pub fn lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The `request` events whose request id starts with `prefix`, in order.
    pub fn requests(&self, prefix: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| {
                l["event"] == "request"
                    && l["request_id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with(prefix))
            })
            .collect()
    }
}
