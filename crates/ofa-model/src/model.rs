//! The whole OFA network for visual entailment: ResNet + encoder once, decoder once over the
//! prompt, and the tied output projection restricted to the candidate answer tokens.

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::OfaConfig;
use crate::decoder::Decoder;
use crate::encoder::{Encoder, EncoderOutput};

#[derive(Debug, Clone)]
pub struct OfaModel {
    pub config: OfaConfig,
    encoder: Encoder,
    decoder: Decoder,
    embed_tokens: Tensor,
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
        self.encoder.embed_images(images)
    }

    /// Encoder over right-padded source ids `[B, T]` and the ResNet features.
    pub fn encode(&self, ids: &Tensor, features: &Tensor) -> Result<EncoderOutput> {
        self.encoder.forward(ids, features)
    }

    /// Final decoder hidden states `[B, M, D]` for right-padded prompts `[B, M]`.
    pub fn decode(&self, prompts: &Tensor, enc: &EncoderOutput) -> Result<Tensor> {
        self.decoder.forward(prompts, enc)
    }

    /// Logits of `answer_ids` at position `last[b]` of each item: `[B, K]`, in f32 whatever the
    /// model's precision. Only these columns of the tied output projection are ever needed.
    pub fn answer_logits(
        &self,
        hidden: &Tensor,
        last: &[usize],
        answer_ids: &[u32],
    ) -> Result<Tensor> {
        let rows = last
            .iter()
            .enumerate()
            .map(|(b, &p)| hidden.i((b, p)))
            .collect::<Result<Vec<_>>>()?;
        let h = Tensor::stack(&rows, 0)?;
        let ids = Tensor::new(answer_ids, &self.device)?;
        let w = self.embed_tokens.index_select(&ids, 0)?;
        h.matmul(&w.t()?)?.to_dtype(candle_core::DType::F32)
    }
}
