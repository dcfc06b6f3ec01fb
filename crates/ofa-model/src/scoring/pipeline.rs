//! The end-to-end visual-entailment pipeline: text and image preprocessing, batched forward,
//! answer scoring. Stateless per call, so one instance can serve many threads.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
pub use ofa_api::{BatchReport, Prepared, Scores, StageTimes};

use crate::error::{OfaError, Result};
use crate::load::config::OfaConfig;
use crate::load::engine_layout::{self, WeightSource};
use crate::load::files::CONFIG_FILE;
use crate::load::mapped::MappedTensors;
use crate::load::model_dir::ModelDir;
use crate::load::precision::Precision;
use crate::load::runtime::{PromptType, RuntimeConfig};
use crate::network::model::OfaModel;
use crate::network::resnet::ResNetLayout;
use crate::preprocess::image::decode_for_resize;
use crate::preprocess::padding::padded;
use crate::preprocess::resize::resize_square;
use crate::preprocess::text::build_prompt;
use crate::preprocess::tokenizer::{Tokenizer, BOS_ID, EOS_ID};
use crate::scoring::feature_cache::{FeatureCache, RecentFeatures};

/// One image–sentence pair: encoded image bytes, the hypothesis, and an optional premise.
#[derive(Debug, Clone, Copy)]
pub struct PairInput<'a> {
    pub image: &'a [u8],
    pub hypothesis: &'a str,
    pub premise: Option<&'a str>,
}

pub struct Entailment {
    pub config: OfaConfig,
    pub runtime: RuntimeConfig,
    tokenizer: Tokenizer,
    pub(super) model: OfaModel,
    answer_ids: Vec<u32>,
    precision: Precision,
    weight_source: WeightSource,
    /// Only the inference thread scores, so this lock is never contended.
    pub(super) image_cache: Option<Mutex<FeatureCache>>,
    /// Without the cache, when on ([`Entailment::with_feature_reuse`]): the features of the
    /// last few pixel buffers, known by identity (not content), so one request's image shared
    /// by pairs in consecutive batches runs the ResNet once. Same lock discipline as the cache.
    pub(super) recent: Option<Mutex<RecentFeatures>>,
    /// Wait for the device after each stage, so a GPU's queued work is timed where it runs.
    stage_sync: bool,
    /// Texts are padded to a multiple of this many ids (0: to the batch's longest).
    text_bucket: usize,
}

/// [`Entailment::with_cuda_graphs`]' text bucket: ≤ 1.6 % more encoder rows, and a few
/// recorded shapes per batch size instead of one per text length.
const GRAPH_TEXT_BUCKET: usize = 16;

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

impl Entailment {
    /// Loads a ModelScope model directory in f32, the reference's precision.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load_with(dir, device, Precision::F32)
    }

    /// Loads a ModelScope model directory, its weights converted to `precision` on `device`.
    pub fn load_with(dir: impl AsRef<Path>, device: &Device, precision: Precision) -> Result<Self> {
        precision.check(device)?;
        let dir = ModelDir::open(dir)?;
        let tokenizer = Tokenizer::from_dir(&dir.root)?;
        let form = precision.dense_form(device);
        let checkpoint = dir.weights.path().to_path_buf();
        // The engine's own layout when `convert` wrote a current one: read as it is, with no
        // transposing or quantising at the start.
        let (source, tensors, mapped) = match engine_layout::find(&dir.root, &dir.weights, form) {
            Ok(Some(converted)) => {
                let (tensors, mapped) = crate::load::weights::load_mapped(&converted)?;
                (WeightSource::Converted(converted), tensors, mapped)
            }
            found => {
                let tensors = crate::load::weights::load_with(&dir.weights, form)?;
                let source = match found {
                    Err(why) => WeightSource::CheckpointOverStale {
                        checkpoint: checkpoint.clone(),
                        why,
                    },
                    _ => WeightSource::Checkpoint(checkpoint.clone()),
                };
                (source, tensors, MappedTensors::default())
            }
        };
        let weights_path = match &source {
            WeightSource::Converted(p) => p.clone(),
            _ => checkpoint,
        };
        let vb = VarBuilder::from_tensors(tensors, precision.dtype(), device);
        let (built, _unused) = crate::load::mapped::within(mapped, || {
            Self::from_parts(dir.config, dir.runtime, tokenizer, vb, &dir.root)
        });
        let mut loaded = built
            .map_err(|e| match e {
                OfaError::Candle(c) => OfaError::Weights {
                    file: weights_path,
                    message: c.to_string(),
                },
                other => other,
            })?
            .with_precision_applied(precision)?;
        loaded.weight_source = source;
        Ok(loaded)
    }

    /// Where the weights came from: random, a checkpoint (transformed as it was read), or an
    /// engine-layout file `convert` wrote.
    pub fn weight_source(&self) -> &WeightSource {
        &self.weight_source
    }

    /// Builds the pipeline from already-read configuration and a weight source (a checkpoint or
    /// random initialisation). `root` names where the configuration came from, for errors.
    pub fn from_parts(
        config: OfaConfig,
        runtime: RuntimeConfig,
        tokenizer: Tokenizer,
        vb: VarBuilder,
        root: &Path,
    ) -> Result<Self> {
        if tokenizer.len() != config.vocab_size {
            return Err(OfaError::Config {
                file: root.join(CONFIG_FILE),
                message: format!(
                    "vocab_size = {} but the tokenizer has {} tokens (vocab.json plus OFA's 9,192 added tokens)",
                    config.vocab_size,
                    tokenizer.len()
                ),
            });
        }
        let answers_file = root.join(&runtime.answer2label_file);
        let answer_ids = tokenizer.answer_ids(&runtime.answers, &answers_file)?;
        let model = OfaModel::new(&config, vb)?;
        Ok(Self {
            config,
            runtime,
            tokenizer,
            model,
            answer_ids,
            precision: Precision::F32,
            weight_source: WeightSource::Random,
            image_cache: None,
            recent: None,
            stage_sync: false,
            text_bucket: 0,
        })
    }

    /// Keeps image features across batches, up to `bytes` (least recently used out).
    pub fn with_image_cache(mut self, bytes: u64) -> Self {
        self.image_cache = (bytes > 0).then(|| Mutex::new(FeatureCache::new(bytes)));
        self
    }

    /// Reuses the features of a pixel buffer seen in a recent batch (the service's setting: a
    /// request's image shared by pairs in several batches). Off by default, so that scoring
    /// the same prepared batch again, as a benchmark or a profile does, runs every stage again.
    pub fn with_feature_reuse(mut self, on: bool) -> Self {
        self.recent = on.then(Mutex::default);
        self
    }

    /// On a GPU, replays the ResNet, the encoder and the decoder from CUDA graphs per batch size
    /// (and text length) up to `max_batch` items (0: never): [`OfaModel::set_cuda_graphs`].
    /// Texts are then padded to a multiple of 16 ids ([`Entailment::with_text_bucket`]).
    pub fn with_cuda_graphs(mut self, max_batch: usize) -> Self {
        self.model.set_cuda_graphs(max_batch);
        let on = self.model.cuda_graphs().max_batch > 0;
        self.with_text_bucket(if on { GRAPH_TEXT_BUCKET } else { 0 })
    }

    /// Pads each batch's texts to a multiple of `ids` (0: to the longest; [`crate::preprocess::padding`]).
    pub fn with_text_bucket(mut self, ids: usize) -> Self {
        self.text_bucket = ids;
        self
    }

    pub fn text_bucket(&self) -> usize {
        self.text_bucket
    }

    /// Runs the ResNet's blocks in `layout` (by default channels-last on a GPU, the CPU's own
    /// kernels channels-first); the results agree to rounding.
    pub fn with_resnet_layout(mut self, layout: ResNetLayout) -> Result<Self> {
        self.model.set_resnet_layout(layout)?;
        Ok(self)
    }

    /// On a GPU, keeps the faster of the ResNet's layouts, timed on `batch` images
    /// ([`OfaModel::tune_resnet_layout`]); the CPU keeps its own kernels.
    pub fn with_tuned_resnet_layout(mut self, batch: usize) -> Result<Self> {
        let size = self.runtime.patch_image_size;
        self.model.tune_resnet_layout(batch, size)?;
        Ok(self)
    }

    /// Times each stage where a GPU runs it (a synchronisation after each; off by default, as
    /// it costs a little throughput). No effect on the CPU, where work runs when called.
    pub fn with_stage_timing(mut self, on: bool) -> Self {
        self.stage_sync = on;
        self
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    pub fn precision(&self) -> Precision {
        match self.model.dtype() {
            DType::BF16 => Precision::Bf16,
            DType::F16 => Precision::F16,
            _ => self.precision,
        }
    }

    /// Quantises the dense layers for `--precision int8` (no-op for other precisions).
    pub fn with_precision_applied(mut self, precision: Precision) -> Result<Self> {
        if precision == Precision::Int8 {
            self.model.quantize_int8()?;
            self.precision = Precision::Int8;
        }
        Ok(self)
    }

    fn sync(&self) -> Result<()> {
        if self.stage_sync && !self.model.device().is_cpu() {
            self.model.device().synchronize()?;
        }
        Ok(())
    }

    pub fn model(&self) -> &OfaModel {
        &self.model
    }

    pub fn answers(&self) -> &[String] {
        &self.runtime.answers
    }

    pub fn answer_ids(&self) -> &[u32] {
        &self.answer_ids
    }

    /// Source ids: `[BOS] + bpe(prompt)[:max_src_length] + [EOS]`.
    pub fn encode_text(&self, hypothesis: &str, premise: Option<&str>) -> Result<Vec<u32>> {
        let prompt = self.prompt(hypothesis, premise);
        let mut ids = self.tokenizer.encode(&prompt)?;
        ids.truncate(self.runtime.max_src_length);
        let mut source = Vec::with_capacity(ids.len() + 2);
        source.push(BOS_ID);
        source.extend(ids);
        source.push(EOS_ID);
        Ok(source)
    }

    /// The exact prompt string the reference tokenises.
    pub fn prompt(&self, hypothesis: &str, premise: Option<&str>) -> String {
        build_prompt(
            hypothesis,
            premise,
            self.runtime.max_src_length,
            self.runtime.prompt.as_deref(),
        )
    }

    /// Decoded, EXIF-oriented, RGB-converted and resized image (uint8 HWC, `S×S×3`).
    pub fn preprocess_image(&self, bytes: &[u8], max_pixels: u64) -> Result<Vec<u8>> {
        let rgb = decode_for_resize(bytes, max_pixels, self.runtime.patch_image_size)?;
        Ok(resize_square(&rgb, self.runtime.patch_image_size))
    }

    /// Peak memory preprocessing this image may take, from its header alone.
    pub fn preprocess_cost(&self, bytes: &[u8], max_pixels: u64) -> Result<u64> {
        Ok(crate::preprocess::image::decode_cost(
            bytes,
            max_pixels,
            self.runtime.patch_image_size,
        )?)
    }

    pub fn prepare(&self, input: &PairInput<'_>, max_pixels: u64) -> Result<Prepared> {
        Ok(Prepared {
            source: self.encode_text(input.hypothesis, input.premise)?,
            pixels: self.preprocess_image(input.image, max_pixels)?.into(),
            cache_scope: 0,
        })
    }

    /// Normalised `[B, 3, S, S]` image tensor.
    pub fn image_tensor(&self, batch: &[&Prepared]) -> Result<Tensor> {
        let (mean, std) = self.runtime.mean_std();
        let images: Vec<&[u8]> = batch.iter().map(|p| &p.pixels[..]).collect();
        crate::preprocess::pixel_tensor::pixel_tensor(
            &images,
            self.runtime.patch_image_size,
            mean,
            std,
            self.model.device(),
            self.model.dtype(),
        )
    }

    /// Id lists right-padded with the pad id into one `[B, width]` tensor ([`padded`]).
    fn padded(&self, rows: &[&[u32]]) -> Result<Tensor> {
        let (pad, limit) = (
            self.config.pad_token_id,
            self.config.max_position_embeddings,
        );
        let device = self.model.device();
        Ok(padded(rows, pad, self.text_bucket, limit, device)?)
    }

    /// Scores a batch in one encoder and one decoder pass.
    pub fn score_batch(&self, batch: &[&Prepared]) -> Result<(Vec<Scores>, BatchReport)> {
        let mut report = BatchReport::default();
        if batch.is_empty() {
            return Ok((Vec::new(), report));
        }
        if let Some(p) = batch.iter().find(|p| p.source.len() < 2) {
            return Err(OfaError::Input(ofa_api::BackendError::Text(format!(
                "source of {} ids lacks BOS/EOS",
                p.source.len()
            ))));
        }
        let t0 = Instant::now();
        let sources: Vec<&[u32]> = batch.iter().map(|p| p.source.as_slice()).collect();
        let ids = self.padded(&sources)?;
        let prompts: Vec<&[u32]> = batch
            .iter()
            .map(|p| match self.runtime.prompt_type {
                PromptType::PrevOutput => &p.source[..p.source.len() - 1],
                PromptType::Src => &p.source[..],
            })
            .collect();
        let last: Vec<usize> = prompts.iter().map(|p| p.len() - 1).collect();
        let prompt_ids = self.padded(&prompts)?;
        report.times.preprocess_ms = ms(t0);

        let t = Instant::now();
        let features = self.batch_features(batch, &mut report)?;
        self.sync()?;
        report.times.resnet_ms = ms(t);
        let t = Instant::now();
        let enc = self.model.encode(&ids, &features)?;
        self.sync()?;
        report.times.encoder_ms = ms(t);
        let t = Instant::now();
        let hidden = self.model.decode(&prompt_ids, &enc)?;
        let logits = self.model.answer_logits(&hidden, &last, &self.answer_ids)?;
        let logits: Vec<Vec<f32>> = logits.to_vec2()?;
        report.times.decoder_ms = ms(t);
        if let Some(bad) = logits.iter().find(|z| z.iter().any(|v| !v.is_finite())) {
            return Err(OfaError::NonFinite(bad.clone()));
        }
        let scores = logits
            .iter()
            .map(|z| Scores::from_logits(&self.runtime.answers, z))
            .collect();
        Ok((scores, report))
    }

    /// Preprocesses and scores a batch of pairs.
    pub fn predict(&self, inputs: &[PairInput<'_>], max_pixels: u64) -> Result<Vec<Scores>> {
        let prepared = inputs
            .iter()
            .map(|i| self.prepare(i, max_pixels))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Prepared> = prepared.iter().collect();
        Ok(self.score_batch(&refs)?.0)
    }
}
