//! How the dense layers' weights are stored, by where and in what precision they will run:
//! as the checkpoint has them, transposed for the CPU's gemm, or quantised to int8, and the
//! names each form travels under through a checkpoint, an engine-layout file and a
//! `VarBuilder`.

use candle_core::{DType, Result, Tensor};

use crate::cpu::int8::quant::Int8Weights;

/// Where a quantised weight travels next to (instead of) `NAME`: `NAME_int8` (packed bytes,
/// u8), `NAME_int8_scale` (f32 per output) and `NAME_int8_offset` (i32 per output, what the
/// kernels' unsigned activations add, so a start need not read every weight to sum it).
pub(crate) const PACKED: &str = "_int8";
pub(crate) const SCALE: &str = "_int8_scale";
pub(crate) const OFFSET: &str = "_int8_offset";

/// Where a weight kept transposed travels instead of `NAME`: `NAME_t`, `[in, out]`.
pub(crate) const TRANSPOSED: &str = "_t";

/// How the dense layers' weights are kept, by where and in what precision they will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseForm {
    /// `[out, in]`, as the checkpoint stores them (GPUs).
    Stored,
    /// `[in, out]`, for the CPU's gemm (see [`crate::network::linear::Linear`]).
    Transposed,
    /// Quantised to int8 (`--precision int8`, CPU).
    Int8,
}

/// Whether `--precision int8` quantises (or the CPU transposes) this checkpoint tensor: the
/// projections and feed-forward weights of the encoder's and decoder's layers.
pub fn is_int8_weight(name: &str) -> bool {
    (name.contains("encoder.layers.") || name.contains("decoder.layers."))
        && [
            ".q_proj.weight",
            ".k_proj.weight",
            ".v_proj.weight",
            ".out_proj.weight",
            ".fc1.weight",
            ".fc2.weight",
        ]
        .iter()
        .any(|s| name.ends_with(s))
}

/// A checkpoint tensor in `form`: a dense layer's weight transposed or replaced by its
/// quantisation (the stored copy freed at once, so a load never holds the model twice),
/// anything else unchanged.
pub fn dense_entries(name: String, t: Tensor, form: DenseForm) -> Result<Vec<(String, Tensor)>> {
    // A checkpoint written with the weights already transposed (`random-model`'s): int8
    // quantises the stored orientation, so it is turned back first.
    if let Some(stored) = name.strip_suffix(TRANSPOSED) {
        if form == DenseForm::Int8 && is_int8_weight(stored) && t.rank() == 2 {
            let (k, n) = t.dims2()?;
            let t = t.to_dtype(DType::F32)?.contiguous()?;
            let w = with_host_f32(&t, |v| transpose(v, k, n))?;
            drop(t);
            let w = Tensor::from_vec(w, (n, k), &candle_core::Device::Cpu)?;
            return dense_entries(stored.to_owned(), w, form);
        }
        return Ok(vec![(name, t)]);
    }
    if form == DenseForm::Stored || !is_int8_weight(&name) || t.rank() != 2 {
        return Ok(vec![(name, t)]);
    }
    if form == DenseForm::Transposed {
        let (n, k) = t.dims2()?;
        let t = t.to_dtype(DType::F32)?.contiguous()?;
        let wt = with_host_f32(&t, |v| transpose(v, n, k))?;
        let wt = Tensor::from_vec(wt, (k, n), t.device())?;
        return Ok(vec![(format!("{name}{TRANSPOSED}"), wt)]);
    }
    let (n, k) = t.dims2()?;
    let host = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    drop(t);
    let (packed, scale, offset) = Int8Weights::quantize(&host, n, k).to_tensors()?;
    Ok(vec![
        (format!("{name}{PACKED}"), packed),
        (format!("{name}{SCALE}"), scale),
        (format!("{name}{OFFSET}"), offset),
    ])
}

/// `f` over a contiguous f32 CPU tensor's values, borrowed rather than copied out.
pub(crate) fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("a CPU tensor expected, not one on {:?}", t.device());
    };
    Ok(f(crate::network::conv::f32_slice(cpu, layout)?))
}

/// `[rows, cols]` → `[cols, rows]`, in 32 × 32 tiles that stay in L1 (candle's strided copy,
/// element by element, doubled the load time of OFA-large).
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const TILE: usize = 32;
    let mut out = vec![0f32; src.len()];
    // Each task writes 32 whole rows of the output.
    out.par_chunks_mut(TILE * rows.max(1))
        .enumerate()
        .for_each(|(tile, block)| {
            let c0 = tile * TILE;
            for r0 in (0..rows).step_by(TILE) {
                for (dc, row) in block.chunks_mut(rows).enumerate() {
                    for r in r0..(r0 + TILE).min(rows) {
                        row[r] = src[r * cols + c0 + dc];
                    }
                }
            }
        });
    out
}

/// Whether a checkpoint entry is an integer part of a quantised weight (not a float tensor).
pub fn is_int8_entry(name: &str) -> bool {
    name.ends_with(PACKED) || name.ends_with(OFFSET)
}

/// Whether an engine-layout entry is a dense weight the CPU's kernels read as it is stored
/// (transposed f32, or packed int8), so a load can leave it in the file's mapping.
pub fn runs_mapped(name: &str) -> bool {
    name.ends_with(PACKED) || name.strip_suffix(TRANSPOSED).is_some_and(is_int8_weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_sizes_that_are_not_multiples_of_the_tile() {
        for (rows, cols) in [(1, 1), (3, 70), (33, 65), (64, 32)] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let out = transpose(&src, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        out[c * rows + r],
                        src[r * cols + c],
                        "{rows}×{cols} at {r},{c}"
                    );
                }
            }
        }
    }
}
