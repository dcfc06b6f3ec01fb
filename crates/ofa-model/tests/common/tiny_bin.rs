//! The tiny model's `pytorch_model.bin` is not stored in the repo (it would double its size):
//! it is rebuilt, byte for byte as the reference wrote it, from `model.safetensors` plus the
//! frame `tools/bin_skeleton.py` split off (zip headers and pickle). Shared by every test crate.

use std::path::Path;

/// Makes `dir/pytorch_model.bin` if it is missing or not the recipe's size; safe to call from
/// many tests and processes at once (each writes its own file, then renames it into place).
pub fn ensure(dir: &Path) {
    let target = dir.join("pytorch_model.bin");
    let recipe = std::fs::read_to_string(dir.join("pytorch_model.bin.recipe"))
        .expect("fixtures: pytorch_model.bin.recipe");
    let size: u64 = recipe
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .expect("recipe header: `# pytorch_model.bin: SIZE bytes, …`");
    if std::fs::metadata(&target).is_ok_and(|m| m.len() == size) {
        return;
    }
    let frame = std::fs::read(dir.join("pytorch_model.bin.frame")).expect("fixtures: frame");
    let source = std::fs::read(dir.join("model.safetensors")).expect("fixtures: safetensors");
    let mut out = Vec::with_capacity(size as usize);
    let mut at = 0usize;
    for line in recipe.lines().filter(|l| !l.starts_with('#')) {
        let n: Vec<usize> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().expect("recipe numbers"))
            .collect();
        match (line.as_bytes()[0], n.as_slice()) {
            (b'F', &[len]) => {
                out.extend_from_slice(&frame[at..at + len]);
                at += len;
            }
            (b'S', &[offset, len]) => out.extend_from_slice(&source[offset..offset + len]),
            _ => panic!("bad recipe line {line:?}"),
        }
    }
    assert_eq!(
        out.len() as u64,
        size,
        "rebuilt pytorch_model.bin has the recipe's size"
    );
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = dir.join(format!(".pytorch_model.bin.{}.{nonce}", std::process::id()));
    std::fs::write(&tmp, &out).expect("write the rebuilt pytorch_model.bin");
    std::fs::rename(&tmp, &target).expect("move the rebuilt pytorch_model.bin into place");
}
