//! The whole OFA network for visual entailment: ResNet + encoder once, decoder once over the
//! prompt, and the tied output projection restricted to the candidate answer tokens.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use crate::cuda::graphs::{GraphSummary, StageGraphs};
use crate::cuda::layout_tuning::LayoutTuning;
use crate::load::config::OfaConfig;
use crate::network::decoder::Decoder;
use crate::network::encoder::{Encoder, EncoderOutput};
use crate::network::resnet::ResNetLayout;
use crate::profile::stage;

/// Answer ids and their rows of the output projection.
type AnswerRows = (Vec<u32>, Tensor);

/// Each stage's CUDA graphs.
#[derive(Debug, Default)]
struct Graphs {
    resnet: StageGraphs,
    encoder: StageGraphs,
    decoder: StageGraphs,
}

/// The model's ResNet on blank images, for [`OfaModel::tune_resnet_layout`].
struct BlankImages<'a> {
    model: &'a mut OfaModel,
    images: Tensor,
}

impl crate::cuda::layout_tuning::LayoutSubject for BlankImages<'_> {
    fn set_layout(&mut self, layout: ResNetLayout) -> Result<()> {
        self.model.set_resnet_layout(layout)
    }

    fn time_pass(&mut self) -> Result<f64> {
        let pass = || self.model.image_features(&self.images);
        Ok(crate::cuda::graph_check::time_ms(&self.model.device, pass)?.1)
    }
}

/// The one result of a single-output stage.
fn first(out: Vec<Tensor>) -> Result<Tensor> {
    match out.into_iter().next() {
        Some(t) => Ok(t),
        None => candle_core::bail!("a stage gave no result"),
    }
}

#[derive(Debug, Clone)]
pub struct OfaModel {
    pub config: OfaConfig,
    encoder: Encoder,
    decoder: Decoder,
    embed_tokens: Tensor,
    /// `embed_tokens`' rows for the answer ids last asked for.
    answer_rows: Arc<Mutex<Option<AnswerRows>>>,
    /// The stages' CUDA graphs (none unless `set_cuda_graphs`).
    graphs: Arc<Graphs>,
    /// How the ResNet's layout was chosen, when it was timed ([`OfaModel::tune_resnet_layout`]).
    layout_tuning: Option<LayoutTuning>,
    device: Device,
}

impl OfaModel {
    pub fn new(config: &OfaConfig, vb: VarBuilder) -> Result<Self> {
        let embed_tokens = vb.get(
            (config.vocab_size, config.d_model),
            "encoder.embed_tokens.weight",
        )?;
        Ok(Self {
            config: config.clone(),
            encoder: Encoder::new(config, embed_tokens.clone(), vb.pp("encoder"))?,
            decoder: Decoder::new(config, embed_tokens.clone(), vb.pp("decoder"))?,
            embed_tokens,
            answer_rows: Arc::default(),
            graphs: Arc::default(),
            layout_tuning: None,
            device: vb.device().clone(),
        })
    }

    /// The encoder's and decoder's dense layers to int8, their f32 weights freed layer by layer.
    pub fn quantize_int8(&mut self) -> Result<()> {
        self.encoder.quantize_int8()?;
        self.decoder.quantize_int8()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// What the weights and activations are stored in.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// ResNet features of `[B, 3, S, S]` normalised images.
    pub fn image_features(&self, images: &Tensor) -> Result<Tensor> {
        let out = self.graphs.resnet.run(&[images], &[], |x| {
            let features = stage("resnet", || self.encoder.embed_images(&x[0]))?;
            Ok(vec![features])
        })?;
        first(out)
    }

    /// On a GPU, records the ResNet, the encoder and the decoder as CUDA graphs for each
    /// batch size (and text length) up to `max_batch` items (0: never); forgets the graphs
    /// recorded so far. Each recording is checked against the plain run before it is used.
    pub fn set_cuda_graphs(&mut self, max_batch: usize) {
        // Reported as it is: 0 off a GPU.
        let max_batch = if self.device.is_cuda() { max_batch } else { 0 };
        // The encoder and decoder read their position caches in place.
        let caches = Some(crate::network::position_cache::generation as fn() -> u64);
        self.graphs = Arc::new(Graphs {
            resnet: StageGraphs::new(max_batch, None),
            encoder: StageGraphs::new(max_batch, caches),
            decoder: StageGraphs::new(max_batch, caches),
        });
    }

    pub fn resnet_layout(&self) -> ResNetLayout {
        self.encoder.resnet_layout()
    }

    /// Runs the ResNet's blocks in `layout` from now on (graphs recorded so far are
    /// forgotten, as they ran the other layout).
    pub fn set_resnet_layout(&mut self, layout: ResNetLayout) -> Result<()> {
        if layout != self.resnet_layout() {
            self.encoder.set_resnet_layout(layout)?;
            self.set_cuda_graphs(self.graphs.resnet.max_batch());
        }
        Ok(())
    }

    /// Where the ResNet's layout is a choice (generic operations: a GPU), times a pass over
    /// `batch` blank `image_size`² images in each layout and keeps the faster. The CPU keeps
    /// its own kernels (channels-first, or the int8 blocks): `None`.
    pub fn tune_resnet_layout(
        &mut self,
        batch: usize,
        image_size: usize,
    ) -> Result<Option<LayoutTuning>> {
        if crate::network::kernels::fused(&self.device) {
            return Ok(None);
        }
        let shape = (batch.max(1), 3, image_size, image_size);
        let images = Tensor::zeros(shape, self.dtype(), &self.device)?;
        let mut subject = BlankImages {
            model: self,
            images,
        };
        let tuning = crate::cuda::layout_tuning::tune(batch.max(1), &mut subject)?;
        self.layout_tuning = Some(tuning);
        Ok(self.layout_tuning)
    }

    /// How the ResNet's layout was chosen, when it was timed.
    pub fn resnet_layout_tuning(&self) -> Option<LayoutTuning> {
        self.layout_tuning
    }

    /// The CUDA graphs recorded so far, all stages together.
    pub fn cuda_graphs(&self) -> GraphSummary {
        let g = &self.graphs;
        GraphSummary::merge(&[
            g.resnet.summary("resnet"),
            g.encoder.summary("encoder"),
            g.decoder.summary("decoder"),
        ])
    }

    /// Encoder over right-padded source ids `[B, T]` and the ResNet features.
    pub fn encode(&self, ids: &Tensor, features: &Tensor) -> Result<EncoderOutput> {
        let (_, _, gh, gw) = features.dims4()?;
        // Read before the stage: a recorded graph cannot read the device back.
        let has_pads = self.encoder.has_pads(ids)?;
        let out = self
            .graphs
            .encoder
            .run(&[ids, features], &[usize::from(has_pads)], |x| {
                let enc = stage("encoder", || {
                    self.encoder.forward_with(&x[0], &x[1], has_pads)
                })?;
                Ok([enc.hidden, enc.positions]
                    .into_iter()
                    .chain(enc.key_mask)
                    .collect())
            })?;
        let mut out = out.into_iter();
        let (Some(hidden), Some(positions)) = (out.next(), out.next()) else {
            candle_core::bail!("the encoder stage gave fewer than two results");
        };
        Ok(EncoderOutput {
            hidden,
            positions,
            key_mask: out.next(),
            grid: (gh, gw),
        })
    }

    /// Final decoder hidden states `[B, M, D]` for right-padded prompts `[B, M]`.
    pub fn decode(&self, prompts: &Tensor, enc: &EncoderOutput) -> Result<Tensor> {
        let mut inputs = vec![prompts, &enc.hidden, &enc.positions];
        inputs.extend(enc.key_mask.as_ref());
        let (gh, gw) = enc.grid;
        let out = self.graphs.decoder.run(&inputs, &[gh, gw], |x| {
            let enc = EncoderOutput {
                hidden: x[1].clone(),
                positions: x[2].clone(),
                key_mask: x.get(3).cloned(),
                grid: (gh, gw),
            };
            Ok(vec![stage("decoder", || {
                self.decoder.forward(&x[0], &enc)
            })?])
        })?;
        first(out)
    }

    /// Logits of `answer_ids` at position `last[b]` of each item: `[B, K]`, in f32 whatever the
    /// model's precision. Only these columns of the tied output projection are ever needed.
    pub fn answer_logits(
        &self,
        hidden: &Tensor,
        last: &[usize],
        answer_ids: &[u32],
    ) -> Result<Tensor> {
        let (b, m, d) = hidden.dims3()?;
        if last.len() != b || last.iter().any(|&p| p >= m) {
            candle_core::bail!("answer positions {last:?} for hidden states of {b}×{m}");
        }
        // One gather for the batch (stacking per-item rows cost a copy kernel per item).
        let rows: Vec<u32> = last
            .iter()
            .enumerate()
            .map(|(i, &p)| (i * m + p) as u32)
            .collect();
        let rows = Tensor::from_vec(rows, b, &self.device)?;
        let h = hidden.reshape((b * m, d))?.index_select(&rows, 0)?;
        let w = self.answer_rows(answer_ids)?;
        h.matmul(&w.t()?)?.to_dtype(candle_core::DType::F32)
    }

    /// The output projection's rows for `answer_ids`, gathered once.
    fn answer_rows(&self, answer_ids: &[u32]) -> Result<Tensor> {
        let mut cached = self.answer_rows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((ids, rows)) = cached.as_ref() {
            if ids == answer_ids {
                return Ok(rows.clone());
            }
        }
        let ids = Tensor::new(answer_ids, &self.device)?;
        let rows = self.embed_tokens.index_select(&ids, 0)?;
        *cached = Some((answer_ids.to_vec(), rows.clone()));
        Ok(rows)
    }
}
