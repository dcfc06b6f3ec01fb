//! Images served over HTTP on loopback, for the routes that fetch image URLs.

/// Python's `http.server` over the golden images on a loopback port, stopped on drop.
pub struct ImageHost {
    child: std::process::Child,
    pub port: u16,
}

impl ImageHost {
    pub fn start() -> ImageHost {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(super::fixtures().join("golden/images"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs http.server");
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed().as_secs() < 20, "http.server never listened");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        ImageHost { child, port }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for ImageHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
