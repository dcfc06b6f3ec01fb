//! CUDA graphs for a stage of the network: its kernels recorded once per input shape and
//! replayed, so a small batch pays one graph launch instead of hundreds of kernel launches
//! (each candle operation costs the host several microseconds; at batch 1 on an H200 that
//! overhead, not the GPU, set the ResNet's time).
//!
//! A shape is recorded after its first, ordinary run, which also loads every kernel module,
//! sizes cuBLAS's workspace and leaves candle's kernel parameters on the device, so nothing the
//! recording captures allocates or uploads outside it. The
//! recording reads its input from, and writes its result to, buffers kept with the graph; each
//! replay copies the new input in and the result out. A shape whose recording fails runs
//! without a graph from then on, and the failure is kept for [`StageGraphs::summary`]. Off the
//! GPU, or with graphs off, a stage runs as it is.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Result, Tensor};

/// Recorded graphs of one stage, by input shape and type.
#[derive(Debug, Default)]
pub struct StageGraphs {
    /// Batches up to this size are recorded (0: never). Past a few items a batch is bound by
    /// the GPU's arithmetic, and each recorded shape holds its intermediate memory.
    max_batch: usize,
    entries: Mutex<HashMap<(Vec<usize>, DType), Entry>>,
}

#[derive(Debug)]
enum Entry {
    #[cfg(feature = "cuda")]
    Recorded(imp::Recorded),
    /// Recording failed for this shape (why): it runs without a graph.
    Plain(String),
}

/// What a stage's graphs hold, for logs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GraphSummary {
    pub max_batch: usize,
    /// Shapes replayed from a graph.
    pub recorded: usize,
    /// Shapes whose recording failed, with the error.
    pub failed: Vec<String>,
}

impl StageGraphs {
    pub fn new(max_batch: usize) -> Self {
        Self {
            max_batch,
            entries: Mutex::default(),
        }
    }

    pub fn summary(&self) -> GraphSummary {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = GraphSummary {
            max_batch: self.max_batch,
            ..GraphSummary::default()
        };
        for ((shape, dtype), e) in entries.iter() {
            match e {
                #[cfg(feature = "cuda")]
                Entry::Recorded(_) => s.recorded += 1,
                Entry::Plain(why) => s.failed.push(format!("{shape:?} {dtype:?}: {why}")),
            }
        }
        s.failed.sort();
        s
    }

    /// `stage(input)`, from a recorded graph where there is one for `input`'s shape (on a GPU,
    /// batches up to `max_batch`). `stage` must be a pure function of its input on the device:
    /// no reads back to the host, no caches filled on the way.
    pub fn run(&self, input: &Tensor, stage: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let small = input.dims().first().is_some_and(|&b| b <= self.max_batch);
        if !input.device().is_cuda() || !small {
            return stage(input);
        }
        let key = (input.dims().to_vec(), input.dtype());
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&key) {
            #[cfg(feature = "cuda")]
            Some(Entry::Recorded(r)) => return r.replay(input),
            Some(Entry::Plain(_)) => return stage(input),
            None => {}
        }
        // candle's kernels upload their shape parameters, which a recording cannot: with the
        // cache on, the plain run leaves them on the device and the recording reuses them.
        #[cfg(feature = "cuda")]
        let _params = input
            .device()
            .as_cuda_device()?
            .enable_cuda_graph_htod_cache();
        let out = stage(input)?;
        let entry = Self::record(input, &out, &stage);
        entries.insert(key, entry);
        Ok(out)
    }

    #[cfg(feature = "cuda")]
    fn record(
        input: &Tensor,
        sample: &Tensor,
        stage: &impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Entry {
        match imp::Recorded::new(input, sample, stage) {
            Ok(r) => Entry::Recorded(r),
            Err(e) => Entry::Plain(e.to_string()),
        }
    }

    #[cfg(not(feature = "cuda"))]
    fn record(_: &Tensor, _: &Tensor, _: &impl Fn(&Tensor) -> Result<Tensor>) -> Entry {
        Entry::Plain("this build has no CUDA support".into())
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph};
    use candle_core::{Result, Tensor};

    /// A graph with the buffers it reads and writes.
    pub struct Recorded {
        graph: SendGraph,
        input: Tensor,
        output: Tensor,
    }

    impl std::fmt::Debug for Recorded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Recorded")
                .field("input", &self.input.shape())
                .field("output", &self.output.shape())
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
            input: &Tensor,
            sample: &Tensor,
            stage: &impl Fn(&Tensor) -> Result<Tensor>,
        ) -> Result<Self> {
            let stream = input.device().as_cuda_device()?.cuda_stream();
            // Allocated before the recording: they outlive it at fixed addresses.
            let buffer = input.contiguous()?.copy()?;
            let output = sample.zeros_like()?;
            stream.synchronize().map_err(driver)?;
            stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(driver)?;
            // Every tensor the stage makes is dropped inside the recording, so the graph frees
            // all it allocates and can be replayed.
            let recorded = stage(&buffer).and_then(|y| output.slice_set(&y.contiguous()?, 0, 0));
            // The recording must end whatever happened, or the stream stays in capture mode.
            let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
            recorded?;
            let graph = graph
                .map_err(driver)?
                .ok_or_else(|| candle_core::Error::Msg("the recording captured nothing".into()))?;
            graph.upload().map_err(driver)?;
            Ok(Self {
                graph: SendGraph(graph),
                input: buffer,
                output,
            })
        }

        pub fn replay(&self, input: &Tensor) -> Result<Tensor> {
            self.input.slice_set(&input.contiguous()?, 0, 0)?;
            self.graph.0.launch().map_err(driver)?;
            // A copy: the next replay overwrites the buffer while callers may still hold this.
            self.output.copy()
        }
    }
}
