//! `deploy/gateway/` and the gateway overlay: rendered by kubectl, every custom resource
//! valid against its definition's schema (Gateway API, Kong), the core ones by
//! kubernetes-validate; what the gateway sends agrees with what the service believes; and the
//! real server, configured as the overlay configures it, takes Kong's requests and refuses
//! the ones that bypass it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::common::{env_vars_read_by, form, image, tool, Server};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rendered() -> Vec<Value> {
    let out = tool(
        Command::new("kubectl")
            .arg("kustomize")
            .arg(root().join("deploy/kubernetes/overlays/gateway")),
        "kubectl kustomize",
    );
    serde_yaml::Deserializer::from_str(std::str::from_utf8(&out.stdout).unwrap())
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

const CUSTOM: [&str; 3] = ["HTTPRoute", "KongPlugin", "KongConsumer"];

#[test]
fn custom_resources_validate_against_their_schemas() {
    let docs = rendered();
    let custom: Vec<&Value> = docs
        .iter()
        .filter(|d| CUSTOM.contains(&d["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(custom.len(), 5, "the route, two plugins, two consumers");
    let file_guard = crate::common::temp_file("ofa-gateway-crs-", ".yaml");
    let file = file_guard.path().to_path_buf();
    let text: String = custom
        .iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect();
    std::fs::write(&file, text).unwrap();
    let out = tool(
        Command::new("python3")
            .arg(root().join("crates/ofa-entail/tests/crd_schemas/validate.py"))
            .arg(&file),
        "the custom resource validator (python3 with jsonschema and PyYAML)",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("valid ")
            .count(),
        5
    );

    // The validator does refuse: a misspelt field and a wrong enum value.
    for (from, to) in [("hostnames", "hostname"), ("PathPrefix", "Prefix")] {
        let route = serde_yaml::to_string(find(&docs, "HTTPRoute", "ofa-entail")).unwrap();
        let bad_guard = crate::common::temp_file("ofa-gateway-bad-", ".yaml");
        let bad = bad_guard.path().to_path_buf();
        std::fs::write(&bad, route.replacen(from, to, 1)).unwrap();
        let status = Command::new("python3")
            .arg(root().join("crates/ofa-entail/tests/crd_schemas/validate.py"))
            .arg(&bad)
            .output()
            .unwrap()
            .status;
        assert!(!status.success(), "{from} → {to} must be refused");
    }
}

#[test]
fn the_gateway_and_the_service_agree() {
    let docs = rendered();
    let config = &find(&docs, "ConfigMap", "ofa-entail")["data"];
    let deployment = find(&docs, "Deployment", "ofa-entail");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];

    // The route reaches the Service on its port, and only routes the service has.
    let route = &find(&docs, "HTTPRoute", "ofa-entail")["spec"];
    let backend = &route["rules"][0]["backendRefs"][0];
    let service = find(&docs, "Service", backend["name"].as_str().unwrap());
    assert_eq!(service["spec"]["ports"][0]["port"], backend["port"]);
    let contract: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("crates/ofa-server/assets/openapi.json")).unwrap(),
    )
    .unwrap();
    let paths: BTreeSet<&str> = contract["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for m in route["rules"][0]["matches"].as_array().unwrap() {
        let (kind, value) = (
            m["path"]["type"].as_str().unwrap(),
            m["path"]["value"].as_str().unwrap(),
        );
        match kind {
            "Exact" => assert!(paths.contains(value), "{value} is no route of the service"),
            _ => assert!(paths.iter().any(|p| p.starts_with(value)), "{value}"),
        }
    }
    for internal in ["/metrics", "/healthz", "/readyz", "/info"] {
        assert!(
            !route.to_string().contains(&format!("\"{internal}\"")),
            "{internal} stays inside the cluster"
        );
    }
    // The annotated plugins exist; key-auth hides the key from the service.
    let annotation = find(&docs, "HTTPRoute", "ofa-entail")["metadata"]["annotations"]
        ["konghq.com/plugins"]
        .as_str()
        .unwrap();
    for name in annotation.split(',') {
        find(&docs, "KongPlugin", name);
    }
    let key_auth = find(&docs, "KongPlugin", "ofa-entail-key-auth");
    assert_eq!(key_auth["plugin"], "key-auth");
    assert_eq!(key_auth["config"]["hide_credentials"], true);

    // Kong's header is the one the service reads, and its secret the one the service checks.
    assert_eq!(config["CONSUMER_HEADER"], "X-Consumer-Username");
    let transformer = find(&docs, "KongPlugin", "ofa-entail-gateway-secret");
    let secret_ref = &transformer["configFrom"]["secretKeyRef"];
    let plugin_config: Value = serde_json::from_str(
        find(&docs, "Secret", secret_ref["name"].as_str().unwrap())["stringData"]
            [secret_ref["key"].as_str().unwrap()]
        .as_str()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        plugin_config["remove"]["headers"][0], "X-Gateway-Secret",
        "a client's copy is dropped"
    );
    let added = plugin_config["add"]["headers"][0].as_str().unwrap();
    let (header, value) = added.split_once(':').unwrap();
    assert_eq!(header, "X-Gateway-Secret");
    let env = container["env"].as_array().unwrap();
    let gateway_secret = env.iter().find(|e| e["name"] == "GATEWAY_SECRET").unwrap();
    let r = &gateway_secret["valueFrom"]["secretKeyRef"];
    let service_secret = find(&docs, "Secret", r["name"].as_str().unwrap())["stringData"]
        [r["key"].as_str().unwrap()]
    .as_str()
    .unwrap();
    assert_eq!(value, service_secret);

    // Every Kong consumer has its line (its limits) in the service's consumer file.
    let file = config["API_KEYS_FILE"].as_str().unwrap();
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| file.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("the consumer file is mounted");
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let consumers_secret = find(
        &docs,
        "Secret",
        volume["secret"]["secretName"].as_str().unwrap(),
    );
    let key = file.rsplit('/').next().unwrap();
    let text = consumers_secret["stringData"][key].as_str().unwrap();
    let consumers = ofa_access::Consumers::parse(text, std::path::Path::new(file)).unwrap();
    for c in docs.iter().filter(|d| d["kind"] == "KongConsumer") {
        let name = c["username"].as_str().unwrap();
        let listed = consumers
            .by_name(name)
            .unwrap_or_else(|| panic!("{name} has no line"));
        assert!(listed.rate.is_some() && listed.quota.is_some(), "{name}");
    }
    // Limits are shared through the overlay's Redis.
    let redis = find(&docs, "Service", "ofa-entail-redis");
    assert_eq!(
        config["LIMITS_BACKEND"],
        format!(
            "redis://ofa-entail-redis:{}/0",
            redis["spec"]["ports"][0]["port"]
        )
    );
    let reads = env_vars_read_by("serve");
    let names = config
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .chain(env.iter().filter_map(|e| e["name"].as_str()));
    for k in names {
        assert!(reads.contains(k), "serve does not read {k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_configured_as_the_overlay_takes_kongs_requests_only() {
    let docs = rendered();
    let config = &find(&docs, "ConfigMap", "ofa-entail")["data"];
    let secret = find(&docs, "Secret", "ofa-entail-gateway")["stringData"]["GATEWAY_SECRET"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir_guard = tempfile::Builder::new()
        .prefix("ofa-gateway-overlay-")
        .tempdir()
        .unwrap();
    let dir = dir_guard.path().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("consumers");
    std::fs::write(
        &file,
        find(&docs, "Secret", "ofa-entail-consumers")["stringData"]["consumers"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let s = Server::start(&[
        (
            "CONSUMER_HEADER",
            config["CONSUMER_HEADER"].as_str().unwrap(),
        ),
        ("GATEWAY_SECRET", &secret),
        ("API_KEYS_FILE", file.to_str().unwrap()),
        ("RATE_LIMIT", config["RATE_LIMIT"].as_str().unwrap()),
        ("QUOTA", config["QUOTA"].as_str().unwrap()),
    ]);
    let c = reqwest::Client::new();
    let send = |headers: Vec<(&'static str, String)>| {
        let mut r = c
            .post(s.url("/predict"))
            .multipart(form(image("tiny_8x8.png"), "x"));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    // As Kong sends it: the consumer it authenticated, and the secret.
    let r = send(vec![
        ("x-consumer-username", "globex".into()),
        ("x-gateway-secret", secret.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    // globex's own line: 10000/day.
    assert_eq!(r.headers()["x-quota-limit"], "10000");
    assert_eq!(r.headers()["x-ratelimit-limit"], "60");
    // Around the gateway: no consumer, or a consumer without the secret.
    assert_eq!(send(vec![]).await.unwrap().status(), 401);
    let r = send(vec![("x-consumer-username", "acme".into())])
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
