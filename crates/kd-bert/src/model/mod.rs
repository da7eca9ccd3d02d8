//! The BERT model: embeddings, encoder and optional heads, one struct for teachers and
//! students alike.

mod attention;
mod embeddings;
mod encoder;
mod heads;
mod layers;

pub use attention::{AttentionMaps, BertAttention};
pub use embeddings::BertEmbeddings;
pub use encoder::{BertEncoder, BertLayer, EncoderOutput, LayerAttention};
pub use heads::{ClassifierHead, MlmHead, Pooler};
pub use layers::{ForwardCtx, LayerNorm, Linear};

use crate::config::{Architecture, BertConfig};
use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

/// Additive value on masked-out keys (the value TinyBERT's attention loss expects).
pub const MASK_VALUE: f64 = -10000.0;

/// A batch of model inputs, all `[B, L]`.
#[derive(Debug, Clone)]
pub struct BertInput {
    /// Token ids (u32 or i64).
    pub input_ids: Tensor,
    /// Segment ids; zeros when absent.
    pub token_type_ids: Option<Tensor>,
    /// 1 for real tokens, 0 for padding; all ones when absent.
    pub attention_mask: Option<Tensor>,
}

impl BertInput {
    /// Input ids, token types and attention mask of a padded kd-data `batch` as `[B, L]` u32
    /// tensors on `device`.
    pub fn from_batch(batch: &kd_data::Batch, device: &candle_core::Device) -> Result<Self> {
        let shape = (batch.batch_size, batch.seq_len);
        Ok(BertInput {
            input_ids: Tensor::from_slice(&batch.input_ids, shape, device)?,
            token_type_ids: Some(Tensor::from_slice(&batch.token_type_ids, shape, device)?),
            attention_mask: Some(Tensor::from_slice(&batch.attention_mask, shape, device)?),
        })
    }

    /// The additive key mask `[B, 1, 1, L]` in `dtype`: 0 on real tokens, -10000 on padding.
    pub fn additive_mask(&self, dtype: DType) -> Result<Tensor> {
        let (b, l) = self.input_ids.dims2()?;
        let ones = Tensor::ones((b, l), DType::F32, self.input_ids.device())?;
        let m = match &self.attention_mask {
            Some(m) => m.to_dtype(DType::F32)?,
            None => ones.clone(),
        };
        let additive = (ones.sub(&m)? * MASK_VALUE)?;
        additive.reshape((b, 1, 1, l))?.to_dtype(dtype)
    }
}

/// BERT with the heads of its [`Architecture`]. Parameter names follow Hugging Face
/// (`bert.embeddings.*`, `bert.encoder.layer.N.*`, `bert.pooler.*`, `cls.predictions.*`,
/// `classifier.*`).
#[derive(Debug, Clone)]
pub struct Bert {
    /// The configuration the model was built from.
    pub config: BertConfig,
    /// Which heads are present.
    pub architecture: Architecture,
    /// Input embeddings.
    pub embeddings: BertEmbeddings,
    /// Encoder layers.
    pub encoder: BertEncoder,
    /// Pooler (base and classification models).
    pub pooler: Option<Pooler>,
    /// MLM head (masked-LM models).
    pub mlm: Option<MlmHead>,
    /// Classifier (classification models).
    pub classifier: Option<ClassifierHead>,
}

impl Bert {
    /// Builds the model, creating or loading every tensor through `vb` (root of the names).
    pub fn new(config: &BertConfig, architecture: Architecture, vb: VarBuilder) -> Result<Self> {
        let bvb = vb.pp("bert");
        let embeddings = BertEmbeddings::new(config, bvb.pp("embeddings"))?;
        let encoder = BertEncoder::new(config, bvb.pp("encoder"))?;
        let with_pooler = architecture != Architecture::MaskedLm;
        let pooler = with_pooler
            .then(|| Pooler::new(config, bvb.pp("pooler")))
            .transpose()?;
        let mlm = (architecture == Architecture::MaskedLm)
            .then(|| {
                MlmHead::new(
                    config,
                    embeddings.word_embeddings.clone(),
                    vb.pp("cls").pp("predictions"),
                )
            })
            .transpose()?;
        let classifier = (architecture == Architecture::SequenceClassification)
            .then(|| ClassifierHead::new(config, vb.pp("classifier")))
            .transpose()?;
        let mut config = config.clone();
        config.architectures = Some(vec![architecture.hf_name().to_string()]);
        Ok(Self {
            config,
            architecture,
            embeddings,
            encoder,
            pooler,
            mlm,
            classifier,
        })
    }

    /// Runs embeddings and encoder; `attention_layers` lists the 1-based layers whose
    /// attention maps to return.
    pub fn encode(
        &self,
        input: &BertInput,
        attention_layers: &[usize],
        ctx: &mut ForwardCtx,
    ) -> Result<EncoderOutput> {
        let emb = self
            .embeddings
            .forward(&input.input_ids, input.token_type_ids.as_ref(), ctx)?;
        let mask = input.additive_mask(emb.dtype())?;
        self.encoder.forward(emb, &mask, attention_layers, ctx)
    }

    /// Like [`Bert::encode`], but the embeddings and the first `frozen_layers` layers run on
    /// `frozen` (an inference view of the same weights, see `LoadedModel::inference_model`) in
    /// eval mode, so no autograd graph is recorded below the first trainable layer. Used to
    /// fine-tune only the top of an encoder cheaply.
    pub fn encode_frozen_bottom(
        &self,
        frozen: &Bert,
        frozen_layers: usize,
        input: &BertInput,
        attention_layers: &[usize],
        ctx: &mut ForwardCtx,
    ) -> Result<EncoderOutput> {
        let n = self.encoder.layers.len();
        if frozen_layers > n || frozen.encoder.layers.len() != n {
            candle_core::bail!("cannot freeze {frozen_layers} of {n} layers")
        }
        let mut eval = ForwardCtx::eval();
        let emb = frozen.embeddings.forward(
            &input.input_ids,
            input.token_type_ids.as_ref(),
            &mut eval,
        )?;
        let mask = input.additive_mask(emb.dtype())?;
        let mut hidden_states = vec![emb];
        let mut attentions = Vec::new();
        for i in 0..n {
            let number = i + 1;
            let keep = attention_layers.contains(&number);
            let x = hidden_states.last().expect("non-empty");
            let (out, maps) = if i < frozen_layers {
                frozen.encoder.layers[i].forward(x, &mask, keep, &mut eval)?
            } else {
                self.encoder.layers[i].forward(x, &mask, keep, ctx)?
            };
            if let Some(maps) = maps {
                attentions.push(LayerAttention {
                    layer: number,
                    maps,
                });
            }
            hidden_states.push(out);
        }
        Ok(EncoderOutput {
            hidden_states,
            attentions,
        })
    }

    /// MLM logits for hidden states (`[N, H]` or `[B, L, H]`).
    pub fn mlm_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.mlm {
            Some(head) => head.forward(hidden),
            None => candle_core::bail!("this model has no MLM head"),
        }
    }

    /// Classifier logits `[B, num_labels]` from an encoder output.
    pub fn classify(&self, out: &EncoderOutput, ctx: &mut ForwardCtx) -> Result<Tensor> {
        match (&self.pooler, &self.classifier) {
            (Some(pooler), Some(head)) => {
                head.forward(&pooler.forward(out.last_hidden_state())?, ctx)
            }
            _ => candle_core::bail!("this model has no classification head"),
        }
    }
}

/// Rows of `hidden` `[B, L, H]` at flat positions `b * L + l` (u32), as `[N, H]`.
pub fn gather_positions(hidden: &Tensor, flat_positions: &Tensor) -> Result<Tensor> {
    let (b, l, h) = hidden.dims3()?;
    hidden.reshape((b * l, h))?.index_select(flat_positions, 0)
}
