//! Times the SHA-256 pass a cache hit makes (online, every cached file is re-hashed against
//! the hub's listing, as the Python client does): `cargo run --release -p ofa-hub --example
//! hash_file -- FILE`.

fn main() {
    let path = std::env::args_os().nth(1).expect("usage: hash_file FILE");
    let path = std::path::Path::new(&path);
    let size = std::fs::metadata(path).expect("readable file").len();
    let t = std::time::Instant::now();
    let digest = ofa_hub::hash::sha256_file(path).expect("readable file");
    let s = t.elapsed().as_secs_f64();
    println!(
        "{digest}  {:.2} s, {:.0} MB/s",
        s,
        size as f64 / 1e6 / s.max(1e-9)
    );
}
