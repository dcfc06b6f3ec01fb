//! The ResNet's bottleneck block over any form of its convolutions (candle's layout,
//! channels-last, int8): the wiring is the same, only the convolutions and the activations'
//! type differ.

use candle_core::Result;

/// A convolution with its folded BatchNorm, as a bottleneck block uses it.
pub trait BlockConv {
    /// The activations it reads and writes.
    type Act;

    /// `act(conv(x) + bias (+ residual))`, ReLU when `relu`.
    fn forward(&self, x: &Self::Act, residual: Option<&Self::Act>, relu: bool)
        -> Result<Self::Act>;
}

/// 1×1, 3×3 (strided in a stage's first block), 1×1 plus the shortcut, then ReLU.
#[derive(Debug, Clone)]
pub struct Bottleneck<C> {
    pub conv1: C,
    pub conv2: C,
    pub conv3: C,
    /// The shortcut's projection where the shape changes.
    pub downsample: Option<C>,
}

impl<C> Bottleneck<C> {
    /// The same block with each convolution converted by `f`.
    pub fn map<D>(&self, f: impl Fn(&C) -> Result<D>) -> Result<Bottleneck<D>> {
        Ok(Bottleneck {
            conv1: f(&self.conv1)?,
            conv2: f(&self.conv2)?,
            conv3: f(&self.conv3)?,
            downsample: self.downsample.as_ref().map(&f).transpose()?,
        })
    }

    /// Each convolution with its name in the checkpoint (`conv1` … `downsample.0`).
    pub fn named(&self) -> impl Iterator<Item = (&'static str, &C)> {
        [
            ("conv1", Some(&self.conv1)),
            ("conv2", Some(&self.conv2)),
            ("conv3", Some(&self.conv3)),
            ("downsample.0", self.downsample.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, c)| Some((name, c?)))
    }
}

impl<C: BlockConv> Bottleneck<C> {
    pub fn forward(&self, x: &C::Act) -> Result<C::Act> {
        let h = self.conv1.forward(x, None, true)?;
        let h = self.conv2.forward(&h, None, true)?;
        let projected;
        let shortcut = match &self.downsample {
            Some(d) => {
                projected = d.forward(x, None, false)?;
                &projected
            }
            None => x,
        };
        self.conv3.forward(&h, Some(shortcut), true)
    }
}
