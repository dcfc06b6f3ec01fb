//! The job commands as a user runs them against a real RabbitMQ node: a `worker` process with
//! its metrics port, `submit` and `collect`, and a raw AMQP client for what another producer
//! or an operator would publish or read.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use super::jobs::results;
use super::rabbit::{free_port, Rabbit};
use super::{fixtures, metric_value};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ofa-entail"))
}

pub struct Worker {
    pub child: Child,
    pub port: u16,
    pub log: std::path::PathBuf,
}

impl Worker {
    pub fn start(rabbit: &Rabbit, dir: &Path, env: &[(&str, &str)]) -> Worker {
        let port = free_port();
        let log = dir.join(format!("worker-{port}.log"));
        let mut c = bin();
        c.arg("worker")
            .arg("--model-dir")
            .arg(fixtures().join("tiny_ofa_ve"))
            .env("AMQP_URL", rabbit.url())
            .env("METRICS_PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("IMAGE_ROOT", fixtures().join("golden/images"))
            .env("IMAGE_URL_TIMEOUT", "5")
            .env("RETRY_DELAY", "0.1")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ));
        for (k, v) in env {
            c.env(k, v);
        }
        let w = Worker {
            child: c.spawn().unwrap(),
            port,
            log,
        };
        let t = Instant::now();
        while w.get("/readyz").0 != 200 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "worker not ready: {}",
                w.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        w
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, "")
    }

    pub fn request(&self, method: &str, path: &str, json: &str) -> (u16, String) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        let _ = write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_owned())
    }

    pub fn jobs(&self, outcome: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        metric_value(&text, &format!("ofa_jobs_total{{outcome=\"{outcome}\"}}"))
    }

    pub fn metric(&self, name: &str) -> f64 {
        metric_value(&self.get("/metrics").1, name)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for_ok(&self, n: f64) {
        let t = Instant::now();
        while self.jobs("ok") < n {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "no progress: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn submit(rabbit: &Rabbit, jobs: &Path, args: &[&str]) -> Output {
    bin()
        .arg("submit")
        .arg(jobs)
        .args(args)
        .env("AMQP_URL", rabbit.url())
        .output()
        .unwrap()
}

pub fn collect(rabbit: &Rabbit, out: &Path, expect: usize, idle_s: u32) -> Output {
    bin()
        .arg("collect")
        .arg("--out")
        .arg(out)
        .args(["--expect", &expect.to_string()])
        .args(["--idle-timeout", &idle_s.to_string()])
        .env("AMQP_URL", rabbit.url())
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Publishes raw bytes to a queue, as any other producer could.
pub fn publish_raw(rabbit: &Rabbit, queue: &str, body: &[u8]) {
    runtime().block_on(async {
        let conn = Connection::connect(&rabbit.url(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
        conn.close(200, "".into()).await.unwrap();
    });
}

/// Every message in a queue (acked away), with its headers.
pub fn drain_queue(rabbit: &Rabbit, queue: &str, n: usize) -> Vec<(Vec<u8>, FieldTable)> {
    runtime().block_on(async {
        let conn = Connection::connect(&rabbit.url(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    d.acker.ack(BasicAckOptions::default()).await.unwrap();
                    got.push((d.data, d.properties.headers().clone().unwrap_or_default()));
                }
                _ => break,
            }
        }
        conn.close(200, "".into()).await.unwrap();
        got
    })
}

/// Every job id exactly once in the results file.
pub fn assert_each_once(out: &Path, n: usize) {
    let all = results(out);
    let ids: HashSet<&str> = all.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(all.len(), n, "one line per job");
    assert_eq!(ids.len(), n, "no id twice");
    for i in 0..n {
        assert!(ids.contains(format!("job-{i}").as_str()), "job-{i} lost");
    }
    assert!(all.iter().all(|v| v["status"] == "ok"));
}
