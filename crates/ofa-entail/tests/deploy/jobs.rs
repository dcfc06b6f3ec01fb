//! The bulk-job deployment assets (`deploy/kubernetes/jobs`, `deploy/prometheus/jobs-alerts.yaml`)
//! agree with the worker: they render and validate, every variable is one the commands read,
//! the queue names and the secret line up across the worker, KEDA and the alerts, the probes
//! answer on a real worker connected to a real broker, and the alerts name only metrics it
//! exports.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::rabbit::Rabbit;
use crate::common::{env_vars_read_by, tool};
use serde_json::Value;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text.split_once("\r\n\r\n").unwrap().1.to_owned())
}

fn envs(container: &Value) -> Vec<String> {
    container["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn jobs_assets_render_validate_and_agree_with_a_running_worker() {
    let rendered = String::from_utf8(
        tool(
            Command::new("kubectl")
                .arg("kustomize")
                .arg(deploy().join("kubernetes/jobs")),
            "kubectl kustomize",
        )
        .stdout,
    )
    .unwrap();
    crate::common::validate_strictly("jobs", &rendered);
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&rendered)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };

    // Typed Kubernetes objects, hardened like the server's.
    use k8s_openapi::api::{apps, batch, core};
    let deployment: apps::v1::Deployment = serde_json::from_value(find("Deployment")).unwrap();
    let cron: batch::v1::CronJob = serde_json::from_value(find("CronJob")).unwrap();
    let secret: core::v1::Secret = serde_json::from_value(find("Secret")).unwrap();
    let config: core::v1::ConfigMap = serde_json::from_value(find("ConfigMap")).unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let worker = &pod.containers[0];
    assert_eq!(worker.args.as_deref(), Some(&["worker".to_owned()][..]));
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    let sc = worker.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let cron_pod = cron
        .spec
        .unwrap()
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let submit = &cron_pod.containers[0];
    assert_eq!(submit.args.as_ref().unwrap()[0], "submit");
    let data = config.data.unwrap();

    // Every variable given to a command is one it reads; the queue settings reach both.
    let json = find("Deployment");
    let worker_json = &json["spec"]["template"]["spec"]["containers"][0];
    let secret_keys: Vec<String> = secret.string_data.unwrap().into_keys().collect();
    assert_eq!(secret_keys, ["AMQP_URL"]);
    let worker_reads = env_vars_read_by("worker");
    let given: BTreeSet<String> = data
        .keys()
        .cloned()
        .chain(envs(worker_json))
        .chain(secret_keys.iter().cloned())
        .collect();
    let unknown: Vec<&String> = given
        .iter()
        .filter(|k| !worker_reads.contains(*k))
        .collect();
    assert!(unknown.is_empty(), "worker does not read {unknown:?}");
    let submit_reads = env_vars_read_by("submit");
    for k in [
        "AMQP_URL",
        "JOBS_QUEUE",
        "RESULTS_QUEUE",
        "DEAD_LETTER_QUEUE",
        "DELIVERY_LIMIT",
    ] {
        assert!(submit_reads.contains(k) && given.contains(k), "{k}");
    }
    let init = &json["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(init["args"], serde_json::json!(["download"]));
    let download_reads = env_vars_read_by("download");
    assert!(envs(init).iter().all(|k| download_reads.contains(k)));

    // Probes and metrics on the port METRICS_PORT names; grace covers the drain.
    let port = worker.ports.as_ref().unwrap()[0].container_port;
    assert_eq!(data["METRICS_PORT"], port.to_string());
    let grace = pod.termination_grace_period_seconds.unwrap();
    assert!(grace as f64 > data["SHUTDOWN_TIMEOUT"].parse::<f64>().unwrap());

    // KEDA: scales the worker to zero on the jobs queue, authenticated by the same secret.
    let scaled = find("ScaledObject");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        "ofa-entail-worker"
    );
    assert_eq!(scaled["spec"]["minReplicaCount"], 0);
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "rabbitmq");
    assert_eq!(
        trigger["metadata"]["queueName"],
        data["JOBS_QUEUE"].as_str()
    );
    let auth = find("TriggerAuthentication");
    assert_eq!(
        trigger["authenticationRef"]["name"],
        auth["metadata"]["name"]
    );
    let target = &auth["spec"]["secretTargetRef"][0];
    assert_eq!(target["name"], find("Secret")["metadata"]["name"]);
    assert_eq!(target["key"], "AMQP_URL");
    let claim = &cron_pod.volumes.as_ref().unwrap()[0];
    assert_eq!(
        claim.persistent_volume_claim.as_ref().unwrap().claim_name,
        find("PersistentVolumeClaim")["metadata"]["name"]
    );

    // Alert rules: promtool accepts them; they watch the queues the ConfigMap names.
    let alerts = deploy().join("prometheus/jobs-alerts.yaml");
    tool(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(&alerts),
        "promtool",
    );
    let alert_text = std::fs::read_to_string(&alerts).unwrap();
    for q in ["JOBS_QUEUE", "DEAD_LETTER_QUEUE"] {
        assert!(
            alert_text.contains(&format!("queue=\"{}\"", data[q])),
            "{q}"
        );
    }

    // A real worker, as the manifests configure it, on a real broker.
    let rabbit = Rabbit::start("deploy");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ofa-entail"));
    cmd.arg("worker")
        .arg("--model-dir")
        .arg(crate::common::fixtures().join("tiny_ofa_ve"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &data {
        cmd.env(k, v);
    }
    cmd.env("AMQP_URL", rabbit.url())
        .env("METRICS_PORT", metrics_port.to_string())
        .env("HOST", "127.0.0.1")
        .env_remove("MODEL_CACHE");
    let mut child = cmd.spawn().unwrap();
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_err()
        || get(metrics_port, "/readyz").0 != 200
    {
        assert!(t.elapsed() < Duration::from_secs(60), "worker never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    for probe in [
        &worker.startup_probe,
        &worker.liveness_probe,
        &worker.readiness_probe,
    ] {
        let path = probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .clone();
        assert_eq!(
            get(metrics_port, path.as_deref().unwrap()).0,
            200,
            "{path:?}"
        );
    }
    // The queue depths are exported once the worker has read them from the broker (at once
    // after connecting, then every 15 s).
    let metrics = loop {
        let (_, metrics) = get(metrics_port, "/metrics");
        if metrics.contains("ofa_broker_queue_messages{") {
            break metrics;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no queue depths: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut used = BTreeSet::new();
    for (i, _) in alert_text.match_indices("ofa_") {
        let name: String = alert_text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        used.insert(name);
    }
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "alerts use metrics the worker lacks: {missing:?}"
    );
}
