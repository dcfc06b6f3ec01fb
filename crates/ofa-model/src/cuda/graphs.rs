//! CUDA graphs for a stage of the network (the ResNet, the encoder, the decoder): its kernels
//! recorded once per input shape and replayed, so a small batch pays one graph launch instead
//! of hundreds of kernel launches (each candle operation costs the host several microseconds;
//! at batch 1 on an H200 that overhead, not the GPU, set most of a pass's time).
//!
//! A shape is recorded after its first, ordinary run, which also loads every kernel module,
//! sizes cuBLAS's workspace, fills the model's position caches for it and leaves candle's kernel
//! parameters on the device, so nothing the recording captures allocates or uploads outside it.
//! The recording reads its inputs from, and writes its results to, buffers kept with the graph;
//! each replay copies the new inputs in and the results out. A recording is kept only when its
//! replay gives the plain run's results and is faster ([`crate::cuda::graph_check`]); a shape whose
//! recording fails or is not kept runs without a graph from then on, and why is kept for
//! [`StageGraphs::summary`]. Off the GPU, or with graphs off, a stage runs as it is.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Result, Tensor};

/// Distinct shapes a stage records at most (texts of every length at several batch sizes);
/// past it new shapes run without a graph.
const MAX_SHAPES: usize = 256;

/// Bytes of input and result buffers a stage keeps for its graphs at most (the encoder's are
/// ~63 MB a shape at batch 8 in f32); past it new shapes run without a graph.
const MAX_BUFFER_BYTES: usize = 1 << 30;

/// What tells two runs of a stage apart: each input's shape and type, and host values the
/// stage's kernels depend on.
type Key = (Vec<(Vec<usize>, DType)>, Vec<usize>);

/// Recorded graphs of one stage, by input shapes.
#[derive(Debug, Default)]
pub struct StageGraphs {
    /// Batches up to this size are recorded (0: never). Past a few items a batch is bound by
    /// the GPU's arithmetic, not by launches.
    max_batch: usize,
    /// The version of what the stage reads besides its inputs and weights (caches whose
    /// values a graph reads in place); a graph recorded at another version is recorded anew.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    version: Option<fn() -> u64>,
    entries: Mutex<HashMap<Key, Entry>>,
}

#[derive(Debug)]
enum Entry {
    /// A graph, the version it was recorded at, and what its check found.
    #[cfg(feature = "cuda")]
    Recorded(imp::Recorded, u64, crate::cuda::graph_check::GraphCheck),
    /// This shape runs without a graph (why: its recording failed or was not kept).
    Plain(String),
}

/// What a stage's graphs hold, for logs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GraphSummary {
    pub max_batch: usize,
    /// Shapes replayed from a graph.
    pub recorded: usize,
    /// Each replayed shape's check: the plain run's time, the replay's, their difference.
    pub checks: Vec<String>,
    /// Shapes that run without a graph, and why (the recording failed; its replay differed
    /// from the plain run or was not faster).
    pub plain: Vec<String>,
}

impl GraphSummary {
    /// Several stages' summaries as one.
    pub fn merge(parts: &[GraphSummary]) -> GraphSummary {
        let mut all = GraphSummary::default();
        for p in parts {
            all.max_batch = all.max_batch.max(p.max_batch);
            all.recorded += p.recorded;
            all.checks.extend(p.checks.iter().cloned());
            all.plain.extend(p.plain.iter().cloned());
        }
        all
    }
}

impl StageGraphs {
    /// `version`: see the field; `None` when the stage reads nothing but its inputs and
    /// weights.
    pub fn new(max_batch: usize, version: Option<fn() -> u64>) -> Self {
        Self {
            max_batch,
            version,
            entries: Mutex::default(),
        }
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn version(&self) -> u64 {
        self.version.map_or(0, |v| v())
    }

    /// `name` labels the failures.
    pub fn summary(&self, name: &str) -> GraphSummary {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = GraphSummary {
            max_batch: self.max_batch,
            ..GraphSummary::default()
        };
        for ((shapes, extra), e) in entries.iter() {
            let shape = format!("{name} {shapes:?} {extra:?}");
            match e {
                #[cfg(feature = "cuda")]
                Entry::Recorded(_, _, check) => {
                    s.recorded += 1;
                    s.checks.push(format!("{shape}: {}", check.describe()));
                }
                Entry::Plain(why) => s.plain.push(format!("{shape}: {why}")),
            }
        }
        s.checks.sort();
        s.plain.sort();
        s
    }

    /// `stage(inputs)`, from a recorded graph where there is one for the inputs' shapes and
    /// `extra` (on a GPU, batches up to `max_batch`: the first input's first axis). `stage` must
    /// depend on nothing but its inputs and `extra`, and read nothing back to the host.
    pub fn run(
        &self,
        inputs: &[&Tensor],
        extra: &[usize],
        stage: impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        let plain = || stage(&inputs.iter().map(|t| (*t).clone()).collect::<Vec<_>>());
        let small = inputs
            .first()
            .and_then(|t| t.dims().first())
            .is_some_and(|&b| b <= self.max_batch);
        // Timing each operation synchronises, which a recording cannot do.
        if !small || crate::profile::enabled() || !inputs.iter().all(|t| t.device().is_cuda()) {
            return plain();
        }
        let key: Key = (
            inputs
                .iter()
                .map(|t| (t.dims().to_vec(), t.dtype()))
                .collect(),
            extra.to_vec(),
        );
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        #[cfg(feature = "cuda")]
        if self.version.is_some() {
            // What older graphs read in place may have been freed: they go, and are recorded
            // again as their shapes come back.
            let now = self.version();
            entries.retain(|_, e| !matches!(e, Entry::Recorded(_, v, _) if *v != now));
        }
        match entries.get(&key) {
            #[cfg(feature = "cuda")]
            Some(Entry::Recorded(r, ..)) => return r.replay(inputs),
            Some(Entry::Plain(_)) => return plain(),
            None if entries.len() >= MAX_SHAPES => return plain(),
            None => {}
        }
        // candle's kernels upload their shape parameters, which a recording cannot: with the
        // cache on, the plain run leaves them on the device and the recording reuses them.
        #[cfg(feature = "cuda")]
        let _params = inputs[0]
            .device()
            .as_cuda_device()?
            .enable_cuda_graph_htod_cache();
        let out = plain()?;
        if kept_bytes(&entries) + buffer_bytes(inputs.iter().copied().chain(&out))
            > MAX_BUFFER_BYTES
        {
            return Ok(out);
        }
        // After the plain run, which fills the caches this shape needs.
        let entry = self.record(inputs, &out, &stage);
        entries.insert(key, entry);
        Ok(out)
    }

    #[cfg(feature = "cuda")]
    fn record(
        &self,
        inputs: &[&Tensor],
        sample: &[Tensor],
        stage: &impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
    ) -> Entry {
        let version = self.version();
        let entry = match Self::record_checked(inputs, sample, stage) {
            Ok((r, check)) => {
                match check.verdict(crate::cuda::graph_check::least_precise(sample)) {
                    Ok(()) => Entry::Recorded(r, version, check),
                    Err(why) => Entry::Plain(why),
                }
            }
            Err(e) => Entry::Plain(e.to_string()),
        };
        match entry {
            // The recording itself made a cached value: the graph would read it at an address
            // the cache may free.
            Entry::Recorded(..) if self.version() != version => Entry::Plain(
                "a cache was filled while recording (its values would not stay put)".into(),
            ),
            e => e,
        }
    }

    /// Records `stage`, replays it on the same inputs against the plain run's `sample`, then
    /// times one more plain run and one more replay.
    #[cfg(feature = "cuda")]
    fn record_checked(
        inputs: &[&Tensor],
        sample: &[Tensor],
        stage: &impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
    ) -> Result<(imp::Recorded, crate::cuda::graph_check::GraphCheck)> {
        use crate::cuda::graph_check::{relative_difference, time_ms, GraphCheck};
        let recorded = imp::Recorded::new(inputs, sample, stage)?;
        let difference = relative_difference(sample, &recorded.replay(inputs)?)?;
        let device = inputs[0].device();
        let owned: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        let (_, plain_ms) = time_ms(device, || stage(&owned))?;
        let (_, replay_ms) = time_ms(device, || recorded.replay(inputs))?;
        let check = GraphCheck {
            difference,
            plain_ms,
            replay_ms,
        };
        Ok((recorded, check))
    }

    #[cfg(not(feature = "cuda"))]
    fn record(
        &self,
        _: &[&Tensor],
        _: &[Tensor],
        _: &impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
    ) -> Entry {
        Entry::Plain("this build has no CUDA support".into())
    }
}

/// Bytes of the buffers the graphs of `entries` keep.
fn kept_bytes(entries: &HashMap<Key, Entry>) -> usize {
    entries
        .values()
        .map(|e| match e {
            #[cfg(feature = "cuda")]
            Entry::Recorded(r, ..) => r.bytes(),
            Entry::Plain(_) => 0,
        })
        .sum()
}

/// Bytes `tensors` hold.
fn buffer_bytes<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> usize {
    tensors
        .into_iter()
        .map(|t| t.elem_count() * t.dtype().size_in_bytes())
        .sum()
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph};
    use candle_core::{Result, Tensor};

    /// A graph with the buffers it reads and writes.
    pub struct Recorded {
        graph: SendGraph,
        inputs: Vec<Tensor>,
        outputs: Vec<Tensor>,
    }

    impl std::fmt::Debug for Recorded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Recorded")
                .field("inputs", &self.inputs.len())
                .field("outputs", &self.outputs.len())
                .finish()
        }
    }

    struct SendGraph(CudaGraph);

    // SAFETY: a CUDA graph may be used from any thread as long as calls on it are serialised;
    // every use here is under `StageGraphs::entries`' mutex.
    unsafe impl Send for SendGraph {}

    fn driver(e: impl std::error::Error + Send + Sync + 'static) -> candle_core::Error {
        candle_core::Error::Cuda(Box::new(e))
    }

    impl Recorded {
        pub fn new(
            inputs: &[&Tensor],
            sample: &[Tensor],
            stage: &impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
        ) -> Result<Self> {
            let stream = inputs[0].device().as_cuda_device()?.cuda_stream();
            // Allocated before the recording: they outlive it at fixed addresses.
            let buffers = inputs
                .iter()
                .map(|t| t.contiguous()?.copy())
                .collect::<Result<Vec<_>>>()?;
            let outputs = sample
                .iter()
                .map(Tensor::zeros_like)
                .collect::<Result<Vec<_>>>()?;
            stream.synchronize().map_err(driver)?;
            stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(driver)?;
            // Every tensor the stage makes is dropped inside the recording, so the graph frees
            // all it allocates and can be replayed.
            let recorded = stage(&buffers).and_then(|ys| {
                if ys.len() != outputs.len() {
                    candle_core::bail!(
                        "{} results where the plain run gave {}",
                        ys.len(),
                        outputs.len()
                    );
                }
                outputs
                    .iter()
                    .zip(&ys)
                    .try_for_each(|(o, y)| o.slice_set(&y.contiguous()?, 0, 0))
            });
            // The recording must end whatever happened, or the stream stays in capture mode.
            let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
            recorded?;
            let graph = graph
                .map_err(driver)?
                .ok_or_else(|| candle_core::Error::Msg("the recording captured nothing".into()))?;
            graph.upload().map_err(driver)?;
            Ok(Self {
                graph: SendGraph(graph),
                inputs: buffers,
                outputs,
            })
        }

        /// Bytes of the input and result buffers kept with the graph.
        pub fn bytes(&self) -> usize {
            super::buffer_bytes(self.inputs.iter().chain(&self.outputs))
        }

        pub fn replay(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
            for (buffer, input) in self.inputs.iter().zip(inputs) {
                buffer.slice_set(&input.contiguous()?, 0, 0)?;
            }
            self.graph.0.launch().map_err(driver)?;
            // Copies: the next replay overwrites the buffers while callers may still hold these.
            self.outputs.iter().map(Tensor::copy).collect()
        }
    }
}
