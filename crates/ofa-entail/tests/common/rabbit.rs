//! A real RabbitMQ node (Debian's `rabbitmq-server`) for one test: its own loopback ports, data
//! directory, Erlang port mapper and user, started as the `rabbitmq` user when the tests run
//! as root, and killed (process group and port mapper) when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The node's user and password: tests check the password never shows in any output.
pub const USER: &str = "ofa-test";
pub const PASSWORD: &str = "pw-Zq81-never-logged";

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

pub struct Rabbit {
    pub dir: PathBuf,
    pub port: u16,
    dist_port: u16,
    epmd_port: u16,
    node: String,
    child: Option<Child>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// uid and gid of the `rabbitmq` user, when we are root and it exists.
fn rabbitmq_user() -> Option<(u32, u32)> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.first() != Some(&"rabbitmq") || f.len() < 4 {
            return None;
        }
        Some((f[2].parse().ok()?, f[3].parse().ok()?))
    })
}

impl Rabbit {
    pub fn start(name: &str) -> Rabbit {
        assert!(
            Path::new(SERVER).exists(),
            "{SERVER} missing: install Debian's rabbitmq-server (.ci/run does)"
        );
        let dir = std::env::temp_dir().join(format!("ofa-rabbit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let mut r = Rabbit {
            node: format!("ofa-{name}-{}@localhost", std::process::id()),
            dist_port: free_port(),
            epmd_port: free_port(),
            port,
            dir,
            child: None,
        };
        std::fs::write(
            r.dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{port}\ndefault_user = {USER}\ndefault_pass = {PASSWORD}\nloopback_users = none\n"
            ),
        )
        .unwrap();
        std::fs::write(r.dir.join("enabled_plugins"), "[].\n").unwrap();
        if let Some((uid, gid)) = rabbitmq_user() {
            let status = Command::new("chown")
                .args(["-R", &format!("{uid}:{gid}")])
                .arg(&r.dir)
                .status()
                .unwrap();
            assert!(status.success());
        }
        r.boot();
        r
    }

    fn boot(&mut self) {
        use std::os::unix::process::CommandExt;
        let d = &self.dir;
        let mut c = Command::new(SERVER);
        c.current_dir(d)
            .env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join("node.out")).unwrap())
            .stderr(Stdio::from(
                std::fs::File::create(d.join("node.err")).unwrap(),
            ))
            .process_group(0);
        if let Some((uid, gid)) = rabbitmq_user() {
            c.uid(uid).gid(gid);
        }
        self.child = Some(c.spawn().expect("start rabbitmq-server"));
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "rabbitmq-server exited ({status}): {}",
                    std::fs::read_to_string(d.join("node.out")).unwrap_or_default()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(90),
                "rabbitmq-server did not listen within 90 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("amqp://{USER}:{PASSWORD}@127.0.0.1:{}/%2f", self.port)
    }

    /// The node dies at once (SIGKILL to its process group), as in a crash or an OOM kill.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
    }

    /// Stops the node as an orchestrator does (SIGTERM, then waiting for it to exit) and starts
    /// it again on the same ports and data: queues and their messages survive.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", child.id())])
                .status();
            let t = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if t.elapsed() > Duration::from_secs(60) {
                    let _ = Command::new("kill")
                        .args(["-KILL", "--", &format!("-{}", child.id())])
                        .status();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.boot();
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        self.kill();
        let _ = Command::new("epmd")
            .args(["-port", &self.epmd_port.to_string(), "-kill"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
